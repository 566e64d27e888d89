package usernet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/ctnet/ctnet/internal/dnsforward"
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

// isDNS reports whether a is one of the forwarder's addresses (10.0.2.3, fd00::3).
func (s *Stack) isDNS(a netip.Addr) bool { return a == s.cfg.DNS || a == s.v6.DNS }

// serveDNS takes over a UDP flow to the DNS address: each query is asked of
// the resolvers in turn, each for at most resolverTimeout (so a dead first
// resolver costs one timeout, not the whole flow), at most
// maxConcurrentDNSQueries at once.
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
	var active activity
	active.touch()
	for {
		n, err := active.read(guest, buf, dnsFlowIdleTimeout)
		if err != nil {
			return
		}
		active.touch()
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

// resolve returns the first resolver's answer to query, or SERVFAIL when none
// answers in time; nil if query is not a DNS message.
func (s *Stack) resolve(query []byte) []byte {
	req, err := dnsforward.ParseQuery(query)
	if err != nil {
		return nil
	}
	return dnsforward.Ask(s.ctx, req, s.cfg.Resolvers, "udp", resolverTimeout, s.log)
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
