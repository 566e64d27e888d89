package usernet

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	// udpIdleTimeout ends a flow without traffic either way, like a NAT's
	// UDP mapping (Linux conntrack keeps a replied flow 120 s, an
	// unreplied one 30 s).
	udpIdleTimeout = 60 * time.Second
	maxDatagram    = 65535
)

var datagramBuffers = sync.Pool{New: func() any {
	b := make([]byte, maxDatagram)
	return &b
}}

// forwardUDP is called by gVisor for the first datagram of a flow the stack
// has no endpoint for. Returning false lets gVisor answer with ICMP port
// unreachable.
func (s *Stack) forwardUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	dst := toAddr(id.LocalAddress)
	if s.isDNS(dst) && id.LocalPort == 53 {
		return s.serveDNS(r)
	}
	target, ok := s.hostTarget(dst, id.LocalPort)
	if !ok {
		return false
	}
	host, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
	if err != nil {
		s.log.Debug("refuse udp flow", "dst", target, "err", err)
		return false
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		host.Close()
		return true
	}
	guest := gonet.NewUDPConn(&wq, ep)
	if !s.spawn(func() { s.relayUDP(guest, host) }) {
		guest.Close()
		host.Close()
	}
	return true
}

// relayUDP moves datagrams both ways until the flow has been idle for
// udpIdleTimeout or the stack closes.
func (s *Stack) relayUDP(guest *gonet.UDPConn, host *net.UDPConn) {
	untrack, ok := s.trackPair(guest, host)
	if !ok {
		return
	}
	defer untrack()
	var active activity
	active.touch()
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyDatagrams(host, guest, &active)
		guest.Close()
		host.Close()
	}()
	copyDatagrams(guest, host, &active)
	guest.Close()
	host.Close()
	<-done
}

// copyDatagrams relays until an error, or until the flow is idle both ways.
func copyDatagrams(dst, src net.Conn, active *activity) {
	bp := datagramBuffers.Get().(*[]byte)
	defer datagramBuffers.Put(bp)
	buf := *bp
	for {
		n, err := active.read(src, buf, udpIdleTimeout)
		if err != nil && !isTransientUDPError(err) {
			return
		}
		if err != nil {
			continue
		}
		active.touch()
		if _, err := dst.Write(buf[:n]); err != nil && !isTransientUDPError(err) {
			return
		}
	}
}

// activity is when a flow last carried something, in whichever direction: every
// idle timeout of usernet's flows (UDP, published UDP, ICMP echo, DNS) counts
// from it. The zero value has never been touched.
type activity struct{ last atomic.Int64 }

func (a *activity) touch() { a.last.Store(time.Now().UnixNano()) }

// read reads one datagram from conn, waiting while the flow is active: it ends
// with a timeout error only once the flow has carried nothing either way for idle.
func (a *activity) read(conn net.Conn, buf []byte, idle time.Duration) (int, error) {
	for {
		conn.SetReadDeadline(time.Unix(0, a.last.Load()).Add(idle))
		n, err := conn.Read(buf)
		if isTimeout(err) && time.Since(time.Unix(0, a.last.Load())) < idle {
			continue // the other direction kept the flow alive meanwhile
		}
		return n, err
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isTransientUDPError tells errors that concern one datagram (the ICMP
// error an earlier one caused, a full buffer) from a dead flow.
func isTransientUDPError(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}
