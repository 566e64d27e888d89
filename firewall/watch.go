package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Removals reads nftables' change notifications (a socket subscribed to
// NFNLGRP_NFTABLES) for the removal of any part of ctnet's tables: what `nft flush
// ruleset` (on its own or in a reloaded nftables.conf) does to them.
type Removals struct {
	conn  *netlink.Conn
	quiet time.Duration
}

// deletions are the notifications Removals reads: the kernel drops the others
// (element changes above all, which every ctnet command makes) before they reach the
// socket, so that a watcher neither wakes nor allocates for them, nor loses
// deletions to a full buffer.
var deletions = []uint16{unix.NFT_MSG_DELTABLE, unix.NFT_MSG_DELCHAIN, unix.NFT_MSG_DELRULE, unix.NFT_MSG_DELSET}

// WatchRemovals reads conn, which the caller closes to end Next. It installs a socket
// filter on conn that passes deletions only.
func WatchRemovals(conn *netlink.Conn) (*Removals, error) {
	filter, err := deletionFilter()
	if err != nil {
		return nil, err
	}
	if err := conn.SetBPF(filter); err != nil {
		return nil, fmt.Errorf("filter nftables notifications: %w", err)
	}
	return &Removals{conn: conn, quiet: 100 * time.Millisecond}, nil
}

// deletionFilter is a classic BPF program passing a notification whose netlink
// message type is one of deletions. Each notification is a datagram of its own; the
// type is the header's second field, in host byte order, which BPF loads as network
// order.
func deletionFilter() ([]bpf.RawInstruction, error) {
	prog := []bpf.Instruction{bpf.LoadAbsolute{Off: 4, Size: 2}}
	for i, msg := range deletions {
		var b [2]byte
		binary.NativeEndian.PutUint16(b[:], unix.NFNL_SUBSYS_NFTABLES<<8|msg)
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(binary.BigEndian.Uint16(b[:])), SkipTrue: uint8(len(deletions) - i)})
	}
	prog = append(prog, bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: 0xffffffff})
	return bpf.Assemble(prog)
}

// Next blocks until a batch removes one of ctnet's tables or a chain, rule or set of
// theirs, or notifications were lost (the socket's buffer overflowed, so what they
// said is unknown). It then reads on until nothing more of the kind has come for a
// moment, so that one flush, which arrives as one message per object, is reported
// once, and returns what was removed ("rule of chain forward in table inet ctnet"),
// one line per object. Element changes, which every ctnet command makes, are not
// removals. It returns an error once the connection is closed.
func (r *Removals) Next() ([]string, error) {
	var removed []string
	for {
		msgs, err := r.conn.Receive()
		switch {
		case len(removed) > 0 && errors.Is(err, os.ErrDeadlineExceeded):
			return removed, r.conn.SetReadDeadline(time.Time{})
		case errors.Is(err, unix.ENOBUFS):
			msgs = nil
			removed = append(removed, "unknown: notifications were lost")
		case err != nil:
			return nil, err
		}
		for _, m := range msgs {
			if what := removalOfOurs(m); what != "" {
				removed = append(removed, what)
			}
		}
		if len(removed) > 0 {
			if err := r.conn.SetReadDeadline(time.Now().Add(r.quiet)); err != nil {
				return nil, err
			}
		}
	}
}

// Attributes of the deletion notifications: the table's name is attribute 1 in all
// four (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE).
const (
	attrTable     = 1
	attrChainName = 3 // NFTA_CHAIN_NAME
	attrRuleChain = 2 // NFTA_RULE_CHAIN
	attrSetName   = 2 // NFTA_SET_NAME
)

// removalOfOurs describes what a notification says was deleted when that is a table
// of ctnet's, or a chain, rule or set in one; otherwise it is "".
func removalOfOurs(m netlink.Message) string {
	if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES || len(m.Data) < 4 {
		return ""
	}
	var kind string
	var nameAttr uint16
	switch m.Header.Type & 0xff {
	case unix.NFT_MSG_DELTABLE:
		kind = "table"
	case unix.NFT_MSG_DELCHAIN:
		kind, nameAttr = "chain", attrChainName
	case unix.NFT_MSG_DELRULE:
		kind, nameAttr = "rule of chain", attrRuleChain
	case unix.NFT_MSG_DELSET:
		kind, nameAttr = "set", attrSetName
	default:
		return ""
	}
	// nfgenmsg (family, version, resource id), then the attributes.
	var family string
	switch m.Data[0] {
	case unix.NFPROTO_INET:
		family = "inet"
	case unix.NFPROTO_BRIDGE:
		family = "bridge"
	default:
		return ""
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return ""
	}
	var table, name string
	for ad.Next() {
		switch ad.Type() {
		case attrTable:
			table = ad.String()
		case nameAttr:
			name = ad.String()
		}
	}
	switch {
	case table != TableName:
		return ""
	case kind == "table":
		return fmt.Sprintf("table %s %s", family, table)
	}
	return fmt.Sprintf("%s %s in table %s %s", kind, name, family, table)
}
