package usernet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ErrPingNotPermitted means the kernel refuses unprivileged ICMP sockets to
// this process: its groups are outside net.ipv4.ping_group_range.
var ErrPingNotPermitted = errors.New("ping not permitted")

const (
	icmpIdleTimeout = 30 * time.Second
	maxICMPFlows    = 256
	replyTTL        = 64
)

// icmpForwarder relays echo requests through unprivileged ICMP sockets
// (SOCK_DGRAM, IPPROTO_ICMP): one socket per destination and container
// echo identifier. The kernel gives each socket its own identifier, so
// replies are told apart by socket and get the container's back.
type icmpForwarder struct {
	s *Stack

	mu     sync.Mutex
	flows  map[icmpFlowKey]*icmpFlow
	denied bool
}

type icmpFlowKey struct {
	dst   netip.Addr
	ident uint16
}

type icmpFlow struct {
	conn   *net.UDPConn
	active activity
}

func (f *icmpForwarder) init(s *Stack) {
	f.s = s
	f.flows = make(map[icmpFlowKey]*icmpFlow)
}

// handleEcho is gVisor's default handler for ICMP: it consumes echo
// requests to outside destinations; the stack itself answers those to the
// gateway and DNS addresses (returning false).
func (f *icmpForwarder) handleEcho(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	h := header.ICMPv4(pkt.TransportHeader().Slice())
	if len(h) < header.ICMPv4MinimumSize || h.Type() != header.ICMPv4Echo {
		return false
	}
	return f.forwardEcho(toAddr(id.LocalAddress), h.Ident(), pkt)
}

// handleEcho6 is handleEcho for ICMPv6.
func (f *icmpForwarder) handleEcho6(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	h := header.ICMPv6(pkt.TransportHeader().Slice())
	if len(h) < header.ICMPv6EchoMinimumSize || h.Type() != header.ICMPv6EchoRequest {
		return false
	}
	return f.forwardEcho(toAddr(id.LocalAddress), h.Ident(), pkt)
}

// forwardEcho sends the echo request in pkt to dst through the flow's socket,
// or drops it; false leaves it to the stack.
func (f *icmpForwarder) forwardEcho(dst netip.Addr, ident uint16, pkt *stack.PacketBuffer) bool {
	if dst == f.s.cfg.Gateway || dst == f.s.cfg.DNS || dst == f.s.v6.Gateway || dst == f.s.v6.DNS {
		return false
	}
	if _, ok := f.s.hostTarget(dst, 0); !ok {
		return true
	}
	flow := f.flow(icmpFlowKey{dst: dst, ident: ident})
	if flow == nil {
		return true
	}
	msg := stack.PayloadSince(pkt.TransportHeader())
	defer msg.Release()
	flow.active.touch()
	// The kernel sets the identifier and the checksum.
	flow.conn.WriteToUDPAddrPort(msg.AsSlice(), netip.AddrPortFrom(dst, 0))
	return true
}

// flow returns the socket for key, opening it (and its reply reader) on
// first use; nil when ping is not permitted or too many flows are open.
func (f *icmpForwarder) flow(key icmpFlowKey) *icmpFlow {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.flows[key]; ok {
		return fl
	}
	if f.denied || f.flows == nil || len(f.flows) >= maxICMPFlows {
		return nil
	}
	conn, err := openPingSocket(key.dst.Is6())
	if err != nil {
		if errors.Is(err, ErrPingNotPermitted) {
			f.denied = true
			f.s.log.Warn("icmp echo from the container is dropped", "err", err)
		} else {
			f.s.log.Debug("open icmp socket", "err", err)
		}
		return nil
	}
	fl := &icmpFlow{conn: conn}
	fl.active.touch()
	if !f.s.spawn(func() { f.relayReplies(key, fl) }) {
		conn.Close()
		return nil
	}
	f.flows[key] = fl
	return fl
}

// relayReplies injects the echo replies of one flow until it is idle.
func (f *icmpForwarder) relayReplies(key icmpFlowKey, fl *icmpFlow) {
	defer func() {
		f.mu.Lock()
		if f.flows != nil {
			delete(f.flows, key)
		}
		f.mu.Unlock()
		fl.conn.Close()
	}()
	if !f.s.track(fl.conn) {
		return
	}
	defer f.s.untrack(fl.conn)
	buf := make([]byte, maxDatagram)
	for {
		n, err := fl.active.read(fl.conn, buf, icmpIdleTimeout)
		if err != nil {
			return
		}
		if n < header.ICMPv4MinimumSize {
			continue
		}
		if key.dst.Is6() {
			f.injectReply6(key, buf[:n])
		} else {
			f.injectReply4(key, buf[:n])
		}
	}
}

// injectReply4 gives an echo reply the container's identifier back and sends
// it to the container from the destination it pinged.
func (f *icmpForwarder) injectReply4(key icmpFlowKey, msg []byte) {
	reply := header.ICMPv4(msg)
	if reply.Type() != header.ICMPv4EchoReply {
		return
	}
	reply.SetIdent(key.ident)
	reply.SetChecksum(0)
	reply.SetChecksum(^checksum.Checksum(reply, 0))
	f.inject(key.dst, f.s.cfg.Guest, ipv4.ProtocolNumber, header.ICMPv4ProtocolNumber, msg)
}

// injectReply6 is injectReply4 for ICMPv6, whose checksum covers the
// addresses too.
func (f *icmpForwarder) injectReply6(key icmpFlowKey, msg []byte) {
	reply := header.ICMPv6(msg)
	if reply.Type() != header.ICMPv6EchoReply {
		return
	}
	reply.SetIdent(key.ident)
	reply.SetChecksum(0)
	reply.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header:      reply[:header.ICMPv6MinimumSize],
		Src:         tcpip.AddrFrom16(key.dst.As16()),
		Dst:         tcpip.AddrFrom16(f.s.v6.Guest.As16()),
		PayloadCsum: checksum.Checksum(reply[header.ICMPv6MinimumSize:], 0),
		PayloadLen:  len(reply) - header.ICMPv6MinimumSize,
	}))
	f.inject(key.dst, f.s.v6.Guest, ipv6.ProtocolNumber, header.ICMPv6ProtocolNumber, msg)
}

// inject sends an ICMP message from src (a spoofed, outside address) to the
// container's address guest.
func (f *icmpForwarder) inject(src, guest netip.Addr, netProto tcpip.NetworkProtocolNumber, proto tcpip.TransportProtocolNumber, msg []byte) {
	s := f.s
	r, err := s.ns.FindRoute(nicID, tcpip.AddrFromSlice(src.AsSlice()), tcpip.AddrFromSlice(guest.AsSlice()), netProto, false)
	if err != nil {
		return
	}
	defer r.Release()
	// Both families' echo headers are 8 bytes.
	const hdrLen = header.ICMPv4MinimumSize
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: hdrLen + int(r.MaxHeaderLength()),
		Payload:            buffer.MakeWithData(msg[hdrLen:]),
	})
	defer pkt.DecRef()
	copy(pkt.TransportHeader().Push(hdrLen), msg[:hdrLen])
	pkt.TransportProtocolNumber = proto
	r.WritePacket(stack.NetworkHeaderParams{Protocol: proto, TTL: replyTTL}, pkt)
}

func (f *icmpForwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows = nil
}

// openPingSocket opens an unprivileged ICMP (or ICMPv6) echo socket, wrapped
// as a *net.UDPConn (the kernel presents it as a datagram socket whose "port"
// is the echo identifier). net.ipv4.ping_group_range governs both families.
func openPingSocket(v6 bool) (*net.UDPConn, error) {
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if v6 {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
			return nil, pingDeniedError()
		}
		return nil, fmt.Errorf("open icmp socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "icmp")
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("open icmp socket: %w", err)
	}
	return c.(*net.UDPConn), nil
}

// CheckPing reports whether this process may open unprivileged ICMP echo
// sockets, which usernet needs to forward the container's pings; the error
// wraps ErrPingNotPermitted and says which sysctl to change.
func CheckPing() error {
	c, err := openPingSocket(false)
	if err != nil {
		return err
	}
	return c.Close()
}

func pingDeniedError() error {
	groupRange := "unknown"
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range"); err == nil {
		groupRange = strings.Join(strings.Fields(string(b)), " ")
	}
	return fmt.Errorf("%w: gid %d is outside net.ipv4.ping_group_range (%q); allow it with sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"",
		ErrPingNotPermitted, os.Getegid(), groupRange)
}
