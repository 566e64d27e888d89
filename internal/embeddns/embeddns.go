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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	// again over TCP. It is also the largest query read over UDP.
	maxUDPSize = 1232
	// maxTCPClients caps the TCP connections served at once (each holds a socket);
	// further ones wait in the listen backlog. Clients use TCP only after a truncated
	// answer, one connection per query.
	maxTCPClients = 128
	// tcpFirstQueryTimeout is how long a TCP connection has to send its query, and
	// tcpIdleTimeout how long it may wait before the next one (a client may send
	// several); each answer has tcpFirstQueryTimeout to be written.
	tcpFirstQueryTimeout = 2 * time.Second
	tcpIdleTimeout       = 8 * time.Second
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
	udp    net.PacketConn
	tcp    net.Listener // accepts at most maxTCPClients at once
	cfg    Config
	served bool
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	tcpConn map[net.Conn]bool // the TCP connections being served, which Close closes

	// The cap and the timeouts, fields so that tests can make them small or large.
	forwards        chan struct{} // a token per query being forwarded
	forwardTimeout  time.Duration
	upstreamTimeout time.Duration
	tcpIdleTimeout  time.Duration
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
	s := &Server{udp: pc, tcp: netutil.LimitListener(l, maxTCPClients), tcpConn: map[net.Conn]bool{},
		forwards: make(chan struct{}, maxForwards), forwardTimeout: forwardTimeout, upstreamTimeout: upstreamTimeout,
		tcpIdleTimeout: tcpIdleTimeout}
	s.forwardsCtx, s.stopForwards = context.WithCancel(context.Background())
	return s, nil
}

// Ports are the UDP and TCP ports the server listens on, which queries to port 53
// must be redirected to.
func (s *Server) Ports() (udp, tcp uint16) {
	return uint16(s.udp.LocalAddr().(*net.UDPAddr).Port), uint16(s.tcp.Addr().(*net.TCPAddr).Port)
}

// Serve answers queries with cfg until Close, from goroutines of its own.
func (s *Server) Serve(cfg Config) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s.cfg, s.served = cfg, true
	s.wg.Go(s.serveUDP)
	s.wg.Go(s.serveTCP)
}

// Close stops the server and closes its sockets, and returns once the queries
// under way have ended.
func (s *Server) Close() error {
	s.stopForwards()
	err := errors.Join(s.udp.Close(), s.tcp.Close())
	s.mu.Lock()
	s.closed = true
	for conn := range s.tcpConn {
		conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// serveUDP answers each datagram in a goroutine of its own, as forwards take long.
func (s *Server) serveUDP() {
	buf := make([]byte, maxUDPSize)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		req, err := dnsforward.ParseQuery(slices.Clone(buf[:n])) // its own: a forward may change it
		if err != nil {
			continue
		}
		s.wg.Go(func() {
			if answer := s.answer(req, "udp"); answer != nil {
				s.udp.WriteTo(answer, from)
			}
		})
	}
}

// serveTCP serves each connection in a goroutine of its own, maxTCPClients at most.
func (s *Server) serveTCP() {
	for {
		conn, err := s.tcp.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of files, say: the connection waits in the backlog
			s.cfg.Log.Warn("embedded dns: accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.tcpConn[conn] = true
		s.mu.Unlock()
		s.wg.Go(func() {
			s.serveConn(conn)
			s.mu.Lock()
			delete(s.tcpConn, conn)
			s.mu.Unlock()
			conn.Close()
		})
	}
}

// serveConn answers the queries a TCP connection sends, one after the other, until
// it closes, sends something else, or waits too long.
func (s *Server) serveConn(conn net.Conn) {
	timeout := tcpFirstQueryTimeout
	for {
		conn.SetReadDeadline(time.Now().Add(timeout))
		msg, err := dnsforward.ReadTCP(conn)
		if err != nil {
			return
		}
		req, err := dnsforward.ParseQuery(msg)
		if err != nil {
			return
		}
		answer := s.answer(req, "tcp")
		conn.SetWriteDeadline(time.Now().Add(tcpFirstQueryTimeout))
		if answer == nil || dnsforward.WriteTCP(conn, answer) != nil {
			return
		}
		timeout = s.tcpIdleTimeout
	}
}

// answer answers a container name itself and forwards anything else.
func (s *Server) answer(req *dnsforward.Query, transport string) []byte {
	if req.Questions == 1 && req.Class == dnsforward.ClassINET {
		if addrs, ok := s.cfg.Lookup(strings.TrimSuffix(strings.ToLower(req.Name), ".")); ok {
			m := req.Reply(dnsforward.RcodeSuccess, true)
			// A for IPv4 addresses, AAAA for IPv6 ones: a container without IPv6 has
			// no AAAA, and its name still exists (NOERROR, no answer).
			for _, a := range addrs {
				if a.Is4() && (req.Type == dnsforward.TypeA || req.Type == dnsforward.TypeANY) ||
					a.Is6() && (req.Type == dnsforward.TypeAAAA || req.Type == dnsforward.TypeANY) {
					m = dnsforward.AppendAddress(m, a, ttl)
				}
			}
			return m
		}
	}
	return s.forward(req, transport)
}

// forward asks the upstreams in turn over the transport the query came by (a
// truncated UDP answer makes the client ask again over TCP), and answers SERVFAIL
// when none does in time, or at once when maxForwards queries are under way.
func (s *Server) forward(req *dnsforward.Query, transport string) []byte {
	upstreams := s.cfg.Upstreams()
	if len(upstreams) == 0 {
		return req.Reply(dnsforward.RcodeNameError, false)
	}
	select {
	case s.forwards <- struct{}{}:
		defer func() { <-s.forwards }()
	default:
		s.warnFull()
		return req.Reply(dnsforward.RcodeServerFailure, false)
	}
	req.CapUDPSize(maxUDPSize)
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
