package embeddns

import (
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/miekg/dns"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/netns"
)

// sandbox is a namespace for the server's sockets, with loopback up.
func sandbox(t *testing.T) (*lab.Sandbox, *netns.NS) {
	t.Helper()
	lab.RequireRoot(t)
	sb := lab.NewSandbox(t)
	ns, err := netns.Open(sb.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return sb, ns
}

// upstream is a resolver on the test's loopback, over UDP and TCP, that knows one
// name.
func upstream(t *testing.T, name, addr string) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		if req.Question[0].Name == name {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(addr)})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: l, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// The server answers container names itself, forwards other names to its
// upstreams, over UDP and TCP, and says a name does not exist when it has none.
func TestServer(t *testing.T) {
	_, ns := sandbox(t)
	names := map[string][]netip.Addr{"web": {netip.MustParseAddr("172.18.0.2")}}
	lookup := func(name string) ([]netip.Addr, bool) { a, ok := names[name]; return a, ok }
	up := upstream(t, "svc.test.", "198.51.100.77")

	for _, c := range []struct {
		name      string
		upstreams []netip.AddrPort
		transport string
		qname     string
		qtype     uint16
		rcode     int
		answer    string // the A record's address, "" for none
	}{
		{"container name", []netip.AddrPort{up}, "udp", "web.", dns.TypeA, dns.RcodeSuccess, "172.18.0.2"},
		{"case does not matter", []netip.AddrPort{up}, "udp", "WeB.", dns.TypeA, dns.RcodeSuccess, "172.18.0.2"},
		{"container name over TCP", []netip.AddrPort{up}, "tcp", "web.", dns.TypeA, dns.RcodeSuccess, "172.18.0.2"},
		{"a container has no IPv6 address", []netip.AddrPort{up}, "udp", "web.", dns.TypeAAAA, dns.RcodeSuccess, ""},
		{"forwarded", []netip.AddrPort{up}, "udp", "svc.test.", dns.TypeA, dns.RcodeSuccess, "198.51.100.77"},
		{"forwarded over TCP", []netip.AddrPort{up}, "tcp", "svc.test.", dns.TypeA, dns.RcodeSuccess, "198.51.100.77"},
		{"forwarded, unknown upstream too", []netip.AddrPort{up}, "udp", "nosuch.test.", dns.TypeA, dns.RcodeNameError, ""},
		{"no upstream: only container names exist", nil, "udp", "svc.test.", dns.TypeA, dns.RcodeNameError, ""},
		{"a dead upstream fails the query", []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}, "udp", "svc.test.", dns.TypeA, dns.RcodeServerFailure, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, err := Listen(ns)
			if err != nil {
				t.Fatal(err)
			}
			srv.Serve(Config{Lookup: lookup, Upstreams: func() []netip.AddrPort { return c.upstreams }})
			defer srv.Close()
			udp, tcp := srv.Ports()
			port := udp
			if c.transport == "tcp" {
				port = tcp
			}
			var resp *dns.Msg
			err = ns.Do(func() error {
				q := new(dns.Msg)
				q.SetQuestion(c.qname, c.qtype)
				var err error
				resp, _, err = (&dns.Client{Net: c.transport}).Exchange(q, netip.AddrPortFrom(Address, port).String())
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			var got string
			for _, rr := range resp.Answer {
				if a, ok := rr.(*dns.A); ok {
					got = a.A.String()
				}
			}
			if resp.Rcode != c.rcode || got != c.answer {
				t.Errorf("rcode %s, answer %q; want %s, %q", dns.RcodeToString[resp.Rcode], got, dns.RcodeToString[c.rcode], c.answer)
			}
		})
	}
}

// Close releases the sockets, also when the server never served.
func TestCloseReleasesSockets(t *testing.T) {
	sb, ns := sandbox(t)
	for _, serve := range []bool{false, true} {
		srv, err := Listen(ns)
		if err != nil {
			t.Fatal(err)
		}
		if serve {
			srv.Serve(Config{Lookup: func(string) ([]netip.Addr, bool) { return nil, false }})
		}
		udp, tcp := srv.Ports()
		if err := srv.Close(); err != nil {
			t.Fatalf("close (served %v): %v", serve, err)
		}
		if out, _ := sb.Try("ss", "-Hlnu", "sport", "= :"+strconv.Itoa(int(udp))); out != "" {
			t.Errorf("served %v: the UDP socket is still open:\n%s", serve, out)
		}
		if out, _ := sb.Try("ss", "-Hlnt", "sport", "= :"+strconv.Itoa(int(tcp))); out != "" {
			t.Errorf("served %v: the TCP socket is still open:\n%s", serve, out)
		}
	}
}
