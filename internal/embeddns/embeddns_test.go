package embeddns

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/netns"
)

// sandbox is a namespace for the server's sockets, with loopback up.
func sandbox(t *testing.T) (*lab.Sandbox, *netns.NS) {
	t.Helper()
	lab.RequireRoot(t)
	sb := lab.NewSandbox(t)
	return sb, sb.NS(t)
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
	names := map[string][]netip.Addr{
		"web":  {netip.MustParseAddr("172.18.0.2")},
		"dual": {netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("fd00::3")},
		"six":  {netip.MustParseAddr("fd00::4")},
	}
	lookup := func(name string) ([]netip.Addr, bool) { a, ok := names[name]; return a, ok }
	up := upstream(t, "svc.test.", "198.51.100.77")

	for _, c := range []struct {
		name      string
		upstreams []netip.AddrPort
		transport string
		qname     string
		qtype     uint16
		rcode     int
		answer    string // the A or AAAA record's address, "" for none
	}{
		{"container name", []netip.AddrPort{up}, "udp", "web.", dns.TypeA, dns.RcodeSuccess, "172.18.0.2"},
		{"case does not matter", []netip.AddrPort{up}, "udp", "WeB.", dns.TypeA, dns.RcodeSuccess, "172.18.0.2"},
		{"container name over TCP", []netip.AddrPort{up}, "tcp", "web.", dns.TypeA, dns.RcodeSuccess, "172.18.0.2"},
		{"a container has no IPv6 address", []netip.AddrPort{up}, "udp", "web.", dns.TypeAAAA, dns.RcodeSuccess, ""},
		{"a dual-stack container's IPv6 address", []netip.AddrPort{up}, "udp", "dual.", dns.TypeAAAA, dns.RcodeSuccess, "fd00::3"},
		{"a dual-stack container's IPv4 address", []netip.AddrPort{up}, "udp", "dual.", dns.TypeA, dns.RcodeSuccess, "172.18.0.3"},
		{"an IPv6-only container has no IPv4 address", []netip.AddrPort{up}, "udp", "six.", dns.TypeA, dns.RcodeSuccess, ""},
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
				switch rr := rr.(type) {
				case *dns.A:
					got = rr.A.String()
				case *dns.AAAA:
					got = rr.AAAA.String()
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

// heldUpstream is a resolver on the test's loopback that keeps the queries it gets
// unanswered until release, and answers those and every later one with addr.
type heldUpstream struct {
	pc   net.PacketConn
	addr net.IP

	mu       sync.Mutex
	held     []heldQuery
	received int
	released bool
}

type heldQuery struct {
	from net.Addr
	msg  *dns.Msg
}

func newHeldUpstream(t *testing.T, addr string) *heldUpstream {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	u := &heldUpstream{pc: pc, addr: net.ParseIP(addr)}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			u.mu.Lock()
			u.received++
			if u.released {
				u.answer(heldQuery{from, q})
			} else {
				u.held = append(u.held, heldQuery{from, q})
			}
			u.mu.Unlock()
		}
	}()
	return u
}

func (u *heldUpstream) addrPort() netip.AddrPort {
	return netip.MustParseAddrPort(u.pc.LocalAddr().String())
}

func (u *heldUpstream) answer(q heldQuery) {
	m := new(dns.Msg)
	m.SetReply(q.msg)
	m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.msg.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: u.addr})
	out, _ := m.Pack()
	u.pc.WriteTo(out, q.from)
}

func (u *heldUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.received
}

// release answers the held queries, and from now on every query at once.
func (u *heldUpstream) release() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.released = true
	for _, q := range u.held {
		u.answer(q)
	}
	u.held = nil
}

// waitFor polls cond until it holds, failing t after a generous while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s", what)
		}
	}
}

// client is a UDP socket in ns, connected to the server.
func client(t *testing.T, ns *netns.NS, srv *Server) *dns.Conn {
	t.Helper()
	udp, _ := srv.Ports()
	var conn *dns.Conn
	if err := ns.Do(func() (err error) {
		conn, err = dns.Dial("udp", netip.AddrPortFrom(Address, udp).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ask(t *testing.T, conn *dns.Conn, name string) {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	if err := conn.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
}

// reply reads conn's answer; the deadline only keeps a broken server from hanging
// the test.
func reply(t *testing.T, conn *dns.Conn) *dns.Msg {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	m, err := conn.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func serve(t *testing.T, srv *Server, upstreams ...netip.AddrPort) {
	t.Helper()
	srv.Serve(Config{
		Lookup: func(name string) ([]netip.Addr, bool) {
			return []netip.Addr{netip.MustParseAddr("172.18.0.2")}, name == "web"
		},
		Upstreams: func() []netip.AddrPort { return upstreams },
	})
	t.Cleanup(func() { srv.Close() })
}

// Past the cap of queries being forwarded, a query is answered SERVFAIL at once
// and never leaves; the queries under way are answered when their upstream
// answers, and their slots serve new queries after. Container names answer
// whatever the forwards.
func TestForwardCap(t *testing.T) {
	_, ns := sandbox(t)
	srv, err := Listen(ns)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 4
	srv.forwards, srv.forwardTimeout, srv.upstreamTimeout = make(chan struct{}, limit), time.Hour, time.Hour
	up := newHeldUpstream(t, "198.51.100.77")
	serve(t, srv, up.addrPort())

	var held []*dns.Conn
	for i := range limit {
		c := client(t, ns, srv)
		ask(t, c, fmt.Sprintf("q%d.test.", i))
		held = append(held, c)
	}
	waitFor(t, "forwarded", func() bool { return up.count() == limit })
	over := client(t, ns, srv)
	ask(t, over, "over.test.")
	if m := reply(t, over); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("a query past the cap: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	ask(t, over, "web.")
	if m := reply(t, over); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Errorf("a container name with the forwards full: %s", m)
	}
	if n := up.count(); n != limit {
		t.Errorf("the upstream got %d queries, want the cap, %d", n, limit)
	}

	up.release()
	for i, c := range held {
		if m := reply(t, c); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Errorf("forward %d under the cap, once its upstream answers: %s", i, m)
		}
	}
	for i := range limit + 1 { // the slots are free again
		ask(t, over, fmt.Sprintf("after%d.test.", i))
		if m := reply(t, over); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Errorf("forward %d after the held ones: %s", i, m)
		}
	}
}

// A forward ends at its deadline, whatever upstream it was waiting for, answered
// SERVFAIL, and frees its slot; closing the server ends the forwards under way.
func TestForwardTimeout(t *testing.T) {
	_, ns := sandbox(t)
	srv, err := Listen(ns)
	if err != nil {
		t.Fatal(err)
	}
	// Shorter than one upstream's share: the forward's own deadline must be what
	// ends it, before a second upstream is asked.
	srv.forwards, srv.forwardTimeout, srv.upstreamTimeout = make(chan struct{}, 1), time.Second/2, time.Hour
	first, second := newHeldUpstream(t, "198.51.100.1"), newHeldUpstream(t, "198.51.100.2")
	serve(t, srv, first.addrPort(), second.addrPort())

	c := client(t, ns, srv)
	for i := range 2 { // the second is forwarded only if the first freed the slot
		ask(t, c, fmt.Sprintf("q%d.test.", i))
		if m := reply(t, c); m.Rcode != dns.RcodeServerFailure {
			t.Errorf("query %d to a silent upstream: %s, want SERVFAIL", i, dns.RcodeToString[m.Rcode])
		}
	}
	if n, m := first.count(), second.count(); n != 2 || m != 0 {
		t.Errorf("the first upstream got %d queries, the second %d; want 2 and 0", n, m)
	}

	patient, err := Listen(ns)
	if err != nil {
		t.Fatal(err)
	}
	patient.forwardTimeout, patient.upstreamTimeout = time.Hour, time.Hour
	serve(t, patient, first.addrPort())
	ask(t, client(t, ns, patient), "stuck.test.")
	waitFor(t, "forwarded", func() bool { return first.count() == 3 })
	if err := patient.Close(); err != nil { // returns only once the forward has ended
		t.Errorf("close: %v", err)
	}
}

// Past maxTCPClients connections served at once, a new one waits in the listen
// backlog (its socket not accepted, no file of the server's) until one closes.
func TestTCPClientsCap(t *testing.T) {
	sb, ns := sandbox(t)
	srv, err := Listen(ns)
	if err != nil {
		t.Fatal(err)
	}
	srv.tcpIdleTimeout = time.Hour // the served connections stay
	serve(t, srv)
	_, port := srv.Ports()
	addr := netip.AddrPortFrom(Address, port).String()
	dial := func() *dns.Conn {
		var conn *dns.Conn
		if err := ns.Do(func() (err error) {
			conn, err = dns.Dial("tcp", addr)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	var served []*dns.Conn
	for range maxTCPClients {
		c := dial()
		ask(t, c, "web.")
		if m := reply(t, c); len(m.Answer) != 1 {
			t.Fatalf("connection %d: %s", len(served), m)
		}
		served = append(served, c)
	}
	waiting := dial()
	ask(t, waiting, "web.")
	backlog := func() string {
		out, err := sb.Try("ss", "-Hltn", "sport", "= :"+strconv.Itoa(int(port)))
		if err != nil {
			t.Fatalf("ss: %v: %s", err, out)
		}
		return strings.Fields(out)[1] // Recv-Q: connections not accepted yet
	}
	if got := backlog(); got != "1" {
		t.Errorf("with %d connections served, the listen backlog holds %s; want the new one, 1", maxTCPClients, got)
	}
	served[0].Close()
	if m := reply(t, waiting); len(m.Answer) != 1 {
		t.Errorf("the waiting connection, once another closed: %s", m)
	}
}

// A forwarded query offers its upstream at most maxUDPSize for the answer, which
// the forward reads it into; a smaller offer, or none, is passed on as it is.
func TestForwardCapsUDPSize(t *testing.T) {
	_, ns := sandbox(t)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	offered := make(chan uint16, 1)
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		var size uint16 // none
		if opt := req.IsEdns0(); opt != nil {
			size = opt.UDPSize()
		}
		offered <- size
		m := new(dns.Msg)
		m.SetReply(req)
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	up.NotifyStartedFunc = func() { close(started) }
	go up.ActivateAndServe()
	<-started
	t.Cleanup(func() { up.Shutdown() })

	srv, err := Listen(ns)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv, netip.MustParseAddrPort(pc.LocalAddr().String()))
	conn := client(t, ns, srv)
	for _, c := range []struct {
		offer, want uint16 // 0: no EDNS0 record
	}{{65535, maxUDPSize}, {4096, maxUDPSize}, {1000, 1000}, {0, 0}} {
		q := new(dns.Msg)
		q.SetQuestion("svc.test.", dns.TypeA)
		if c.offer != 0 {
			q.SetEdns0(c.offer, false)
		}
		if err := conn.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		if m := reply(t, conn); m.Id != q.Id || m.Rcode != dns.RcodeSuccess {
			t.Errorf("offer %d: answer %s", c.offer, m)
		}
		if got := <-offered; got != c.want {
			t.Errorf("a query offering %d bytes reached the upstream offering %d, want %d", c.offer, got, c.want)
		}
	}
}
