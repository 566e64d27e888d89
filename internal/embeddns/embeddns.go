// Package embeddns is a container's own DNS server at 127.0.0.11, as Docker's
// embedded DNS is: it answers the names of the containers that share a network with
// the container and forwards every other query to upstream resolvers.
//
// Its sockets are made inside the container's network namespace before the
// container's process starts, so a query never arrives before there is a socket to
// queue it. They listen on ports the kernel picks, and the caller redirects port 53
// to them, so that the container's own programs can still serve DNS. The server itself runs in the process that supervises the container, in
// the host's namespace, where even the host's loopback resolvers answer; it ends
// with the supervisor, and the sockets with it.
package embeddns

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/ctnet/ctnet/netns"
)

// Address is where containers find the server, as in Docker.
var Address = netip.MustParseAddr("127.0.0.11")

const (
	// ttl is short: containers come and go, and their names with them.
	ttl             = 5
	upstreamTimeout = 2 * time.Second
)

// Config is what the server answers and where it forwards.
type Config struct {
	// Lookup returns the addresses of the container called name (lower case, no
	// trailing dot), or false when no container the querier may see has that name.
	Lookup func(name string) ([]netip.Addr, bool)
	// Upstreams returns where every other query goes now, tried in order. With none
	// (a container only on internal networks has no way out), those names do not
	// exist.
	Upstreams func() []netip.AddrPort
	Log       *slog.Logger
}

// Server is one container's DNS server.
type Server struct {
	udp, tcp *dns.Server
	cfg      Config
	served   bool
	wg       sync.WaitGroup
}

// Listen makes the server's UDP and TCP sockets inside ns, at Address on ports the
// kernel picks (see Ports): port 53 stays free for the container's own programs.
// The namespace's loopback must be up.
func Listen(ns *netns.NS) (*Server, error) {
	var pc net.PacketConn
	var l net.Listener
	err := ns.Do(func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(Address, 0).String()); err != nil {
			return err
		}
		if l, err = net.Listen("tcp4", netip.AddrPortFrom(Address, 0).String()); err != nil {
			pc.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen for the container's DNS at %s: %w", Address, err)
	}
	s := &Server{}
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: l, Handler: s}
	return s, nil
}

// Ports are the UDP and TCP ports the server listens on, which queries to port 53
// must be redirected to.
func (s *Server) Ports() (udp, tcp uint16) {
	return uint16(s.udp.PacketConn.LocalAddr().(*net.UDPAddr).Port), uint16(s.tcp.Listener.Addr().(*net.TCPAddr).Port)
}

// Serve answers queries with cfg until Close; it returns once both sockets are
// served.
func (s *Server) Serve(cfg Config) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s.cfg, s.served = cfg, true
	var started sync.WaitGroup
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started.Add(1)
		up := sync.OnceFunc(started.Done) // also when serving fails before it starts
		srv.NotifyStartedFunc = up
		s.wg.Go(func() {
			defer up()
			if err := srv.ActivateAndServe(); err != nil {
				cfg.Log.Warn("embedded dns stopped", "err", err)
			}
		})
	}
	started.Wait()
}

// Close stops the server and closes its sockets (serving ends by closing them).
func (s *Server) Close() error {
	if !s.served {
		return errors.Join(s.udp.PacketConn.Close(), s.tcp.Listener.Close())
	}
	err := errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
	s.wg.Wait()
	return err
}

// ServeDNS answers a container name itself and forwards anything else.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) == 1 && req.Question[0].Qclass == dns.ClassINET {
		q := req.Question[0]
		if addrs, ok := s.cfg.Lookup(strings.TrimSuffix(strings.ToLower(q.Name), ".")); ok {
			m := new(dns.Msg)
			m.SetReply(req)
			m.Authoritative, m.RecursionAvailable = true, true
			if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
				for _, a := range addrs {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
						A:   a.AsSlice(),
					})
				}
			}
			w.WriteMsg(m)
			return
		}
	}
	w.WriteMsg(s.forward(req, w.RemoteAddr().Network()))
}

// forward asks the upstreams in turn over the transport the query came by (a
// truncated UDP answer makes the client ask again over TCP), and answers SERVFAIL
// when none does.
func (s *Server) forward(req *dns.Msg, transport string) *dns.Msg {
	m := new(dns.Msg)
	upstreams := s.cfg.Upstreams()
	if len(upstreams) == 0 {
		m.SetRcode(req, dns.RcodeNameError)
		return m
	}
	c := &dns.Client{Net: transport, Timeout: upstreamTimeout}
	for _, up := range upstreams {
		resp, _, err := c.Exchange(req, up.String())
		if err == nil {
			return resp
		}
		s.cfg.Log.Debug("upstream resolver failed", "server", up, "err", err)
	}
	m.SetRcode(req, dns.RcodeServerFailure)
	return m
}
