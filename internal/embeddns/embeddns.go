// Package embeddns is a container's own DNS server at 127.0.0.11, as Docker's
// embedded DNS is: it answers the names of the containers that share a network with
// the container and forwards every other query to upstream resolvers.
//
// Its sockets are made inside the container's network namespace before the
// container's process starts, so a query never arrives before there is a socket to
// queue it. They listen on ports the kernel picks, and the caller redirects port 53
// to them, so that the container's own programs can still serve DNS. The server
// itself runs in the process that supervises the container, in the host's
// namespace, where even the host's loopback resolvers answer; it ends with the
// supervisor, and the sockets with it.
//
// A container may flood its server: what the server holds for it is bounded
// (maxForwards, forwardTimeout, maxUDPSize, maxTCPClients), so the supervisor's
// sockets and memory are too.
package embeddns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"

	"github.com/ctnet/ctnet/internal/dnsforward"
	"github.com/ctnet/ctnet/netns"
)

// Address is where containers find the server, as in Docker.
var Address = netip.MustParseAddr("127.0.0.11")

const (
	// ttl is short: containers come and go, and their names with them.
	ttl = 5
	// maxForwards caps the queries being forwarded at once, Docker's cap. Each holds
	// a socket (a fresh one per query: its random port keeps spoofed answers out, RFC
	// 5452), a goroutine and a buffer until its answer or its deadline; past the cap
	// a query is answered SERVFAIL at once. At an upstream's usual tens of
	// milliseconds that is tens of thousands of lookups a second; toward a silent
	// one, 1,024 sockets more at most, far below the file limit.
	maxForwards = 1024
	// forwardTimeout ends a forward, however many upstreams it tried: under glibc's
	// 5-second wait, so an answer still finds its client waiting and no slot is held
	// for a query nobody waits for.
	forwardTimeout = 4 * time.Second
	// upstreamTimeout is each upstream's share: a silent first one leaves the next
	// time to answer.
	upstreamTimeout = 2 * time.Second
	// maxUDPSize caps the EDNS0 buffer size a forwarded query offers, which the
	// forward allocates for the answer: the client may ask for 64 KiB. 1,232 bytes is
	// DNS Flag Day 2020's size; a larger answer comes truncated and the client asks
	// again over TCP.
	maxUDPSize = 1232
	// maxTCPClients caps the TCP connections served at once (each holds a socket);
	// further ones wait in the listen backlog. Clients use TCP only after a truncated
	// answer, one connection per query.
	maxTCPClients = 128
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

	// The cap and the timeouts, fields so that tests can make them small or large.
	forwards        chan struct{} // a token per query being forwarded
	forwardTimeout  time.Duration
	upstreamTimeout time.Duration
	// stopForwards ends the forwards under way when the server closes, which waits
	// for them.
	forwardsCtx  context.Context
	stopForwards context.CancelFunc
	warnedFull   atomic.Int64 // when the cap was last logged, in Unix nanoseconds
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
	s := &Server{forwards: make(chan struct{}, maxForwards), forwardTimeout: forwardTimeout, upstreamTimeout: upstreamTimeout}
	s.forwardsCtx, s.stopForwards = context.WithCancel(context.Background())
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: netutil.LimitListener(l, maxTCPClients), Handler: s}
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
	s.stopForwards()
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
			// A for IPv4 addresses, AAAA for IPv6 ones: a container without IPv6 has
			// no AAAA, and its name still exists (NOERROR, no answer).
			for _, a := range addrs {
				switch {
				case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
						A:   a.AsSlice(),
					})
				case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
					m.Answer = append(m.Answer, &dns.AAAA{
						Hdr:  dns.RR_Header{Name: q.Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl},
						AAAA: a.AsSlice(),
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
// when none does in time, or at once when maxForwards queries are under way.
func (s *Server) forward(req *dns.Msg, transport string) *dns.Msg {
	m := new(dns.Msg)
	upstreams := s.cfg.Upstreams()
	if len(upstreams) == 0 {
		m.SetRcode(req, dns.RcodeNameError)
		return m
	}
	select {
	case s.forwards <- struct{}{}:
		defer func() { <-s.forwards }()
	default:
		s.warnFull()
		m.SetRcode(req, dns.RcodeServerFailure)
		return m
	}
	if opt := req.IsEdns0(); opt != nil && opt.UDPSize() > maxUDPSize {
		opt.SetUDPSize(maxUDPSize)
	}
	ctx, cancel := context.WithTimeout(s.forwardsCtx, s.forwardTimeout)
	defer cancel()
	return dnsforward.Ask(ctx, req, upstreams, transport, s.upstreamTimeout, s.cfg.Log)
}

// warnFull logs, at most once a minute, that queries are refused for the cap:
// a flood must not flood the log too.
func (s *Server) warnFull() {
	now, last := time.Now().UnixNano(), s.warnedFull.Load()
	if now-last >= int64(time.Minute) && s.warnedFull.CompareAndSwap(last, now) {
		s.cfg.Log.Warn("embedded dns: too many queries forwarded at once, answering SERVFAIL", "max", cap(s.forwards))
	}
}
