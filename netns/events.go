package netns

import (
	"fmt"

	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NFTEvents returns a new netfilter netlink socket in the namespace, subscribed to
// nftables' change notifications (NFNLGRP_NFTABLES): every batch anyone commits
// there, as messages. The caller closes it.
func (n *NS) NFTEvents() (*mdnetlink.Conn, error) {
	cfg := &mdnetlink.Config{}
	if !n.isProcessNS() {
		// As for NFT: without it the socket is made in the calling thread's namespace,
		// which outside Do is the process's own.
		cfg.NetNS = n.Fd()
	}
	c, err := mdnetlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("open nftables notifications in %s: %w", n.path, err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		c.Close()
		return nil, fmt.Errorf("subscribe to nftables notifications in %s: %w", n.path, err)
	}
	return c, nil
}
