package usernet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	// maxConcurrentDNSQueries bounds the goroutines and sockets one
	// container can tie up with queries; more are dropped (the client
	// retries).
	maxConcurrentDNSQueries = 64
	resolverTimeout         = 2 * time.Second
	dnsFlowIdleTimeout      = 30 * time.Second
)

var errNoResolvers = errors.New("no dns resolvers configured")

// serveDNS takes over a UDP flow to the DNS address: each query is sent to
// the resolvers in turn (one datagram relay per query, so a dead first
// resolver costs one timeout, not the whole flow).
func (s *Stack) serveDNS(r *udp.ForwarderRequest) bool {
	if len(s.cfg.Resolvers) == 0 {
		s.log.Warn("dns query dropped", "err", errNoResolvers)
		return false
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		return true
	}
	guest := gonet.NewUDPConn(&wq, ep)
	if !s.spawn(func() { s.answerQueries(guest) }) {
		guest.Close()
	}
	return true
}

func (s *Stack) answerQueries(guest *gonet.UDPConn) {
	if !s.track(guest) {
		return
	}
	defer s.untrack(guest)
	defer guest.Close()
	buf := make([]byte, maxDatagram)
	for {
		guest.SetReadDeadline(time.Now().Add(dnsFlowIdleTimeout))
		n, err := guest.Read(buf)
		if err != nil {
			return
		}
		query := append([]byte(nil), buf[:n]...)
		select {
		case s.dnsSlots <- struct{}{}:
		default:
			continue
		}
		if !s.spawn(func() {
			defer func() { <-s.dnsSlots }()
			if answer := s.resolve(query); answer != nil {
				guest.Write(answer)
			}
		}) {
			<-s.dnsSlots
			return
		}
	}
}

// resolve returns the first resolver's answer to query, or SERVFAIL when
// none answers in time.
func (s *Stack) resolve(query []byte) []byte {
	for _, server := range s.cfg.Resolvers {
		answer, err := s.exchange(server, query)
		if err == nil {
			return answer
		}
		s.log.Debug("dns resolver failed", "server", server, "err", err)
	}
	return servfail(query)
}

func (s *Stack) exchange(server netip.AddrPort, query []byte) ([]byte, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(s.ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(resolverTimeout))
	if _, err := conn.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, maxDatagram)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		// A connected socket only hears the resolver; still, an answer
		// must carry the query's id.
		if n >= 2 && len(query) >= 2 && buf[0] == query[0] && buf[1] == query[1] {
			return buf[:n], nil
		}
	}
}

// servfail answers query with SERVFAIL so that the client fails now rather
// than after its own timeouts; nil if query is not a DNS message.
func servfail(query []byte) []byte {
	var q dns.Msg
	if err := q.Unpack(query); err != nil {
		return nil
	}
	var m dns.Msg
	m.SetRcode(&q, dns.RcodeServerFailure)
	out, err := m.Pack()
	if err != nil {
		return nil
	}
	return out
}

// dialResolverTCP serves DNS over TCP to the DNS address: the connection is
// relayed to the first resolver that accepts one.
func (s *Stack) dialResolverTCP(ctx context.Context) (net.Conn, error) {
	if len(s.cfg.Resolvers) == 0 {
		return nil, errNoResolvers
	}
	var errs []error
	for _, server := range s.cfg.Resolvers {
		dctx, cancel := context.WithTimeout(ctx, resolverTimeout)
		var d net.Dialer
		c, err := d.DialContext(dctx, "tcp", server.String())
		cancel()
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}
