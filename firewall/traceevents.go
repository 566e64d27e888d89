package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/netns"
)

// TraceEvent is one of the kernel's nftables trace events (NFT_MSG_TRACE): a traced
// packet at a rule that decided something, a chain's return, or a base chain's policy.
type TraceEvent struct {
	Family    nftables.TableFamily
	Table     string
	Chain     string
	Handle    uint64 // the rule's; 0 for a policy or return
	Type      uint32 // unix.NFT_TRACETYPE_RULE, _RETURN or _POLICY
	Verdict   int32  // NF_DROP (0), NF_ACCEPT (1), or an NFT_ verdict (continue -1, jump -3, return -5)
	Target    string // the chain of a jump or goto
	ID        uint32 // the same for one packet at one hook
	IIF       uint32
	OIF       uint32
	Network   []byte // the IPv4 or IPv6 header as the rule saw it (HeaderAddrs reads it)
	Transport []byte // the transport header's start
	Policy    uint32
	// CTState is the packet's conntrack state bits (CTStateNew and so on) and
	// CTStatus its connection's status bits, on kernels since 6.4 and in events
	// that carry the packet.
	CTState  uint32
	CTStatus uint32
}

// Conntrack state bits of a trace event (NF_CT_STATE_*_BIT) and status bits.
const (
	CTStateInvalid     = 1 << 0
	CTStateEstablished = 1 << 1
	CTStateRelated     = 1 << 2
	CTStateNew         = 1 << 3
	CTStateUntracked   = 1 << 6
	CTStatusSrcNAT     = 1 << 4 // IPS_SRC_NAT
	CTStatusDstNAT     = 1 << 5 // IPS_DST_NAT
)

// The conntrack attributes of trace events (NFTA_TRACE_CT_*, Linux 6.4), which
// x/sys does not name yet.
const (
	nftaTraceCTStatus = unix.NFTA_TRACE_PAD + 3
	nftaTraceCTState  = unix.NFTA_TRACE_PAD + 4
)

// Verdicts of trace events beyond netfilter's NF_DROP and NF_ACCEPT.
const (
	VerdictDrop     = 0
	VerdictAccept   = 1
	VerdictContinue = -1
	VerdictJump     = -3
	VerdictGoto     = -4
	VerdictReturn   = -5
)

// TraceListener receives the trace events of one namespace.
type TraceListener struct {
	conn *netlink.Conn
}

// ListenTrace subscribes to the trace events of ns (NFNLGRP_NFTRACE on a netfilter
// socket made inside it: events never leave their namespace). The kernel sends
// events only while someone listens, so a trace listens before it marks its probe.
func ListenTrace(ns *netns.NS) (*TraceListener, error) {
	var conn *netlink.Conn
	err := ns.Do(func() (err error) {
		conn, err = netlink.Dial(unix.NETLINK_NETFILTER, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open a netfilter socket in %s: %w", ns.Path(), err)
	}
	if err := conn.JoinGroup(unix.NFNLGRP_NFTRACE); err != nil {
		conn.Close()
		return nil, fmt.Errorf("listen to nftables trace events in %s: %w", ns.Path(), err)
	}
	return &TraceListener{conn: conn}, nil
}

// Close stops listening; a Receive under way returns.
func (l *TraceListener) Close() error { return l.conn.Close() }

// Receive returns the next events, or os.ErrDeadlineExceeded at deadline.
func (l *TraceListener) Receive(deadline time.Time) ([]TraceEvent, error) {
	if err := l.conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	msgs, err := l.conn.Receive()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, os.ErrDeadlineExceeded
		}
		return nil, fmt.Errorf("receive trace events: %w", err)
	}
	var out []TraceEvent
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_TRACE) || len(m.Data) < 4 {
			continue
		}
		ev, err := decodeTraceEvent(m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// decodeTraceEvent reads an nfgenmsg and its NFTA_TRACE_ attributes
// (linux/netfilter/nf_tables.h), big-endian as netfilter's are.
func decodeTraceEvent(b []byte) (TraceEvent, error) {
	ev := TraceEvent{Family: nftables.TableFamily(b[0])}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return ev, fmt.Errorf("decode trace event: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TRACE_TABLE:
			ev.Table = ad.String()
		case unix.NFTA_TRACE_CHAIN:
			ev.Chain = ad.String()
		case unix.NFTA_TRACE_RULE_HANDLE:
			ev.Handle = ad.Uint64()
		case unix.NFTA_TRACE_TYPE:
			ev.Type = ad.Uint32()
		case unix.NFTA_TRACE_ID:
			ev.ID = ad.Uint32()
		case unix.NFTA_TRACE_IIF:
			ev.IIF = ad.Uint32()
		case unix.NFTA_TRACE_OIF:
			ev.OIF = ad.Uint32()
		case unix.NFTA_TRACE_POLICY:
			ev.Policy = ad.Uint32()
		case nftaTraceCTState:
			ev.CTState = ad.Uint32()
		case nftaTraceCTStatus:
			ev.CTStatus = ad.Uint32()
		case unix.NFTA_TRACE_NETWORK_HEADER:
			ev.Network = ad.Bytes()
		case unix.NFTA_TRACE_TRANSPORT_HEADER:
			ev.Transport = ad.Bytes()
		case unix.NFTA_TRACE_VERDICT:
			ad.Nested(func(nd *netlink.AttributeDecoder) error {
				nd.ByteOrder = binary.BigEndian
				for nd.Next() {
					switch nd.Type() {
					case unix.NFTA_VERDICT_CODE:
						ev.Verdict = int32(nd.Uint32())
					case unix.NFTA_VERDICT_CHAIN:
						ev.Target = nd.String()
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return ev, fmt.Errorf("decode trace event: %w", err)
	}
	return ev, nil
}

// HeaderAddrs is the source and destination of an IPv4 or IPv6 header as a trace
// event carries it; both invalid for anything shorter or of another version.
func HeaderAddrs(header []byte) (src, dst netip.Addr) {
	switch {
	case len(header) >= 20 && header[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(header[ipv4SaddrOffset:])), netip.AddrFrom4([4]byte(header[ipv4DaddrOffset:]))
	case len(header) >= 40 && header[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(header[ipv6SaddrOffset:])), netip.AddrFrom16([16]byte(header[ipv6DaddrOffset:]))
	}
	return netip.Addr{}, netip.Addr{}
}
