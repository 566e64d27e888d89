package firewall

import (
	"errors"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Removals reads nftables' change notifications (a socket subscribed to
// NFNLGRP_NFTABLES) for the removal of any part of ctnet's tables: what `nft flush
// ruleset`, a firewalld reload or a flushing iptables-restore does to them.
type Removals struct {
	conn  *netlink.Conn
	quiet time.Duration
}

// WatchRemovals reads conn, which the caller closes to end Next.
func WatchRemovals(conn *netlink.Conn) *Removals {
	return &Removals{conn: conn, quiet: 100 * time.Millisecond}
}

// Next blocks until a batch removes one of ctnet's tables or a chain, rule or set of
// theirs, or notifications were lost (the socket's buffer overflowed, so what they
// said is unknown). It then reads on until nothing more of the kind has come for a
// moment, so that one flush, which arrives as one message per object, is reported
// once. Element changes, which every ctnet command makes, are not removals. It
// returns an error once the connection is closed.
func (r *Removals) Next() error {
	seen := false
	for {
		msgs, err := r.conn.Receive()
		switch {
		case seen && errors.Is(err, os.ErrDeadlineExceeded):
			return r.conn.SetReadDeadline(time.Time{})
		case errors.Is(err, unix.ENOBUFS):
			msgs = nil
		case err != nil:
			return err
		}
		removed := err != nil // lost notifications may have been removals
		for _, m := range msgs {
			removed = removed || removesOurs(m)
		}
		if removed {
			seen = true
			if err := r.conn.SetReadDeadline(time.Now().Add(r.quiet)); err != nil {
				return err
			}
		}
	}
}

// removesOurs reports whether a notification says that a table of ctnet's, or a
// chain, rule or set in one, was deleted.
func removesOurs(m netlink.Message) bool {
	if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES {
		return false
	}
	switch m.Header.Type & 0xff {
	case unix.NFT_MSG_DELTABLE, unix.NFT_MSG_DELCHAIN, unix.NFT_MSG_DELRULE, unix.NFT_MSG_DELSET:
	default:
		return false
	}
	// nfgenmsg (family, version, resource id), then attributes; the table's name is
	// attribute 1 in all four (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE,
	// NFTA_SET_TABLE).
	if len(m.Data) < 4 {
		return false
	}
	if family := m.Data[0]; family != unix.NFPROTO_INET && family != unix.NFPROTO_BRIDGE {
		return false
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return false
	}
	for ad.Next() {
		if ad.Type() == 1 {
			return ad.String() == TableName
		}
	}
	return false
}
