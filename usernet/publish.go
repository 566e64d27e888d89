package usernet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/published"
)

const (
	innerConnectTimeout = 10 * time.Second
	// maxPublishedUDPFlows bounds the inner sockets one published UDP port
	// keeps open; datagrams from further clients are dropped.
	maxPublishedUDPFlows = 1024
	acceptRetryDelay     = 100 * time.Millisecond
)

// Port is a published port: the host listens on HostIP:HostPort (the zero
// Addr: all addresses of both families, 0.0.0.0 only IPv4's, :: only IPv6's)
// and every connection or UDP flow is relayed to ContainerPort on the
// container's address of the client's family. ContainerIP is not used.
type Port = published.Port

func validatePort(p Port) error {
	if p.Proto != "tcp" && p.Proto != "udp" {
		return fmt.Errorf("%w: port %s: protocol must be tcp or udp", ErrInvalidConfig, p)
	}
	if p.HostPort == 0 || p.ContainerPort == 0 {
		return fmt.Errorf("%w: port %s: ports must be non-zero", ErrInvalidConfig, p)
	}
	if p.HostIP.Is4In6() || p.HostIP.Zone() != "" {
		return fmt.Errorf("%w: port %s: host address must be IPv4 or plain IPv6", ErrInvalidConfig, p)
	}
	return nil
}

// InnerSocketFunc returns a new socket of proto ("tcp" or "udp", IPv4; "tcp6"
// or "udp6", IPv6) that was created inside the container's network namespace
// with IP_TRANSPARENT (IPV6_TRANSPARENT) set, which needs CAP_NET_ADMIN there,
// so the in-namespace helper makes it.
type InnerSocketFunc func(proto string) (*os.File, error)

// Publish listens on the host and relays each client to the container
// without going through the user-mode stack: the inner socket, born in the
// container's namespace, is bound to the client's own address (that is what
// IP_TRANSPARENT allows) and connected to the container, so the container
// sees the client's real address and port; TCP bytes then move socket to
// socket with splice(2), never through user space.
//
// The container's replies go to the client's address, which is not local in
// its namespace; the namespace must route them back to the inner socket
// instead of out of the TAP, which the sandbox does with a policy rule per
// published port (from the guest address, protocol and source port → a
// table whose default route is "local ... dev lo").
func (s *Stack) Publish(p Port, newInner InnerSocketFunc) error {
	if err := validatePort(p); err != nil {
		return err
	}
	if p.HostIP.IsValid() {
		return s.publishOn(p, p.HostIP, newInner)
	}
	if err := s.publishOn(p, netip.IPv4Unspecified(), newInner); err != nil {
		return err
	}
	err := s.publishOn(p, netip.IPv6Unspecified(), newInner)
	if errors.Is(err, syscall.EAFNOSUPPORT) {
		// A kernel without IPv6 (ipv6.disable=1) publishes on IPv4 alone.
		s.log.Debug("published port on IPv4 only", "port", p.String(), "err", err)
		return nil
	}
	return err
}

// publishOn listens on hostIP for one family of p.
func (s *Stack) publishOn(p Port, hostIP netip.Addr, newInner InnerSocketFunc) error {
	local := netip.AddrPortFrom(hostIP, p.HostPort)
	guest, family := netip.AddrPortFrom(s.cfg.Guest, p.ContainerPort), "4"
	if hostIP.Is6() {
		guest, family = netip.AddrPortFrom(s.v6.Guest, p.ContainerPort), "6"
	}
	switch p.Proto {
	case "tcp":
		// "tcp6" listens on IPv6 alone (IPV6_V6ONLY), beside "tcp4".
		ln, err := net.ListenTCP("tcp"+family, net.TCPAddrFromAddrPort(local))
		if err != nil {
			return fmt.Errorf("publish %s on %s: %w", p, hostIP, err)
		}
		if !s.track(ln) {
			return ErrClosed
		}
		if !s.spawn(func() { s.acceptTCP(ln, guest, newInner) }) {
			s.untrack(ln)
			ln.Close()
			return ErrClosed
		}
	case "udp":
		ln, err := net.ListenUDP("udp"+family, net.UDPAddrFromAddrPort(local))
		if err != nil {
			return fmt.Errorf("publish %s on %s: %w", p, hostIP, err)
		}
		wildcard := hostIP.IsUnspecified()
		if wildcard {
			// Replies must leave from the address the client sent to,
			// which only IP_PKTINFO (IPV6_RECVPKTINFO) tells on a
			// wildcard socket.
			level, opt := unix.IPPROTO_IP, unix.IP_PKTINFO
			if hostIP.Is6() {
				level, opt = unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO
			}
			if err := setSockoptInt(ln, level, opt, 1); err != nil {
				ln.Close()
				return fmt.Errorf("publish %s: %w", p, err)
			}
		}
		if !s.track(ln) {
			return ErrClosed
		}
		relay := &publishedUDP{s: s, ln: ln, guest: guest, newInner: newInner, wildcard: wildcard,
			flows: make(map[udpClientKey]*publishedUDPFlow)}
		if !s.spawn(relay.serve) {
			s.untrack(ln)
			ln.Close()
			return ErrClosed
		}
	}
	s.log.Debug("published port", "port", p.String(), "on", hostIP)
	return nil
}

func (s *Stack) acceptTCP(ln *net.TCPListener, guest netip.AddrPort, newInner InnerSocketFunc) {
	defer s.untrack(ln)
	defer ln.Close()
	for {
		c, err := ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// EMFILE and friends: back off rather than spin.
			s.log.Warn("accept published connection", "err", err)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(acceptRetryDelay):
			}
			continue
		}
		if !s.spawn(func() { s.relayPublishedTCP(c, guest, newInner) }) {
			c.Close()
			return
		}
	}
}

func (s *Stack) relayPublishedTCP(client *net.TCPConn, guest netip.AddrPort, newInner InnerSocketFunc) {
	from := client.RemoteAddr().(*net.TCPAddr).AddrPort()
	c, err := dialInner("tcp", from, guest, newInner)
	if errors.Is(err, syscall.ECONNREFUSED) && guest.Addr().Is6() {
		// A server listening on IPv4 alone (0.0.0.0) still serves IPv6
		// clients, as Docker's proxy does, from the IPv4 gateway: the
		// client's own address has no IPv4 form. Without this, "localhost",
		// which clients try on ::1 first, would be accepted and reset
		// rather than refused and retried on 127.0.0.1.
		c, err = dialInner("tcp", netip.AddrPortFrom(s.cfg.Gateway, 0), netip.AddrPortFrom(s.cfg.Guest, guest.Port()), newInner)
	}
	if err != nil {
		s.log.Debug("relay published connection", "client", from, "err", err)
		client.SetLinger(0)
		client.Close()
		return
	}
	inner := c.(*net.TCPConn)
	inner.SetNoDelay(true)
	untrack, ok := s.trackPair(client, inner)
	if !ok {
		return
	}
	defer untrack()
	abort := func() {
		client.SetLinger(0)
		inner.SetLinger(0)
		client.Close()
		inner.Close()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		spliceHalf(inner, client, abort)
	}()
	spliceHalf(client, inner, abort)
	<-done
	client.Close()
	inner.Close()
}

// spliceHalf copies src to dst; between two TCP sockets, (*net.TCPConn)
// ReadFrom uses splice(2) through a pipe, so the bytes stay in the kernel.
func spliceHalf(dst, src *net.TCPConn, abort func()) {
	if _, err := dst.ReadFrom(src); err != nil {
		abort()
		return
	}
	dst.CloseWrite()
}

// bindInner returns a socket from newInner, of the container's address family
// (IPv6 if guest6), bound to the client's address.
func bindInner(proto string, from netip.AddrPort, guest6 bool, newInner InnerSocketFunc) (net.Conn, error) {
	if guest6 {
		proto += "6"
	}
	f, err := newInner(proto)
	if err != nil {
		return nil, fmt.Errorf("make inner socket: %w", err)
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("make inner socket: %w", err)
	}
	var bindErr error
	if err := raw.Control(func(fd uintptr) {
		// The same client address may be bound again while an earlier
		// connection from it lingers in TIME_WAIT.
		if bindErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); bindErr != nil {
			return
		}
		bindErr = unix.Bind(int(fd), sockaddr(from))
	}); err != nil {
		bindErr = err
	}
	if bindErr != nil {
		f.Close()
		return nil, fmt.Errorf("bind inner socket to %s: %w", from, bindErr)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("make inner socket: %w", err)
	}
	return c, nil
}

// dialInner binds a socket from newInner to the client's address and
// connects it to the container.
func dialInner(proto string, from, to netip.AddrPort, newInner InnerSocketFunc) (net.Conn, error) {
	c, err := bindInner(proto, from, to.Addr().Is6(), newInner)
	if err != nil {
		return nil, err
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("make inner socket: unexpected %T", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("make inner socket: %w", err)
	}
	var connErr error
	if err := raw.Control(func(fd uintptr) { connErr = unix.Connect(int(fd), sockaddr(to)) }); err != nil {
		connErr = err
	}
	if errors.Is(connErr, unix.EINPROGRESS) {
		c.SetWriteDeadline(time.Now().Add(innerConnectTimeout))
		if err := raw.Write(func(fd uintptr) bool {
			// Called at once and again whenever the socket turns
			// writable: done when connected or failed.
			if soErr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soErr != 0 {
				connErr = err
				if soErr != 0 {
					connErr = syscall.Errno(soErr)
				}
				return true
			}
			_, err := unix.Getpeername(int(fd))
			connErr = err
			return err == nil
		}); err != nil {
			connErr = err
		}
		c.SetWriteDeadline(time.Time{})
	}
	if connErr != nil {
		c.Close()
		return nil, fmt.Errorf("connect inner socket to %s: %w", to, connErr)
	}
	return c, nil
}

// sockaddr is a's socket address: IPv4 for an IPv4 (or IPv4-mapped) address.
func sockaddr(a netip.AddrPort) unix.Sockaddr {
	if ip := a.Addr(); ip.Is6() && !ip.Is4In6() {
		return &unix.SockaddrInet6{Addr: ip.As16(), Port: int(a.Port())}
	}
	return &unix.SockaddrInet4{Addr: a.Addr().Unmap().As4(), Port: int(a.Port())}
}

func setSockoptInt(c syscall.Conn, level, opt, value int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, value) }); err != nil {
		return err
	}
	return serr
}

// publishedUDP relays one published UDP port: a flow per client address,
// each with its own transparent inner socket.
type publishedUDP struct {
	s        *Stack
	ln       *net.UDPConn
	guest    netip.AddrPort
	newInner InnerSocketFunc
	wildcard bool

	mu    sync.Mutex
	flows map[udpClientKey]*publishedUDPFlow
}

type udpClientKey struct {
	client netip.AddrPort
	local  netip.Addr // the address the client sent to (wildcard only)
}

// publishedUDPFlow's inner socket is bound to the client's address but not
// connected: a server socket bound to no address answers from whichever source
// the container's kernel picks (127.0.0.1 for a client at 127.0.0.1), and a
// connected socket would drop those answers.
type publishedUDPFlow struct {
	inner  *net.UDPConn
	active activity
}

func (r *publishedUDP) serve() {
	s := r.s
	defer s.untrack(r.ln)
	defer r.ln.Close()
	buf := make([]byte, maxDatagram)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	for {
		n, oobn, _, client, err := r.ln.ReadMsgUDPAddrPort(buf, oob)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		key := udpClientKey{client: client}
		if r.wildcard {
			key.local = pktinfoDst(oob[:oobn])
		}
		flow := r.flow(key)
		if flow == nil {
			continue
		}
		flow.active.touch()
		flow.inner.WriteToUDPAddrPort(buf[:n], r.guest)
	}
}

// flow returns the flow of key, dialling its inner socket on first use.
func (r *publishedUDP) flow(key udpClientKey) *publishedUDPFlow {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.flows[key]; ok {
		return f
	}
	if len(r.flows) >= maxPublishedUDPFlows {
		return nil
	}
	c, err := bindInner("udp", key.client, r.guest.Addr().Is6(), r.newInner)
	if err != nil {
		r.s.log.Debug("relay published datagram", "client", key.client, "err", err)
		return nil
	}
	inner, ok := c.(*net.UDPConn)
	if !ok {
		c.Close()
		return nil
	}
	f := &publishedUDPFlow{inner: inner}
	f.active.touch()
	if !r.s.track(inner) {
		return nil
	}
	if !r.s.spawn(func() { r.relayReplies(key, f) }) {
		r.s.untrack(inner)
		inner.Close()
		return nil
	}
	r.flows[key] = f
	return f
}

// relayReplies sends the container's datagrams back to the client, from the
// address the client used, until the flow is idle.
func (r *publishedUDP) relayReplies(key udpClientKey, f *publishedUDPFlow) {
	defer func() {
		r.mu.Lock()
		delete(r.flows, key)
		r.mu.Unlock()
		r.s.untrack(f.inner)
		f.inner.Close()
	}()
	var oob []byte
	switch {
	case key.local.Is4():
		oob = unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: key.local.As4()})
	case key.local.Is6():
		oob = unix.PktInfo6(&unix.Inet6Pktinfo{Addr: key.local.As16()})
	}
	buf := make([]byte, maxDatagram)
	for {
		n, err := f.active.read(f.inner, buf, udpIdleTimeout)
		if err != nil && !isTransientUDPError(err) {
			return
		}
		if err != nil {
			continue
		}
		f.active.touch()
		r.ln.WriteMsgUDPAddrPort(buf[:n], oob, key.client)
	}
}

// pktinfoDst returns the destination address in an IP_PKTINFO or
// IPV6_PKTINFO control message, or the zero Addr.
func pktinfoDst(oob []byte) netip.Addr {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom4(info.Addr)
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom16(info.Addr)
		}
	}
	return netip.Addr{}
}
