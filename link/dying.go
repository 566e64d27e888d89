package link

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/netns"
)

// Dying reports whether a veth's peer namespace is being destroyed, so the kernel
// will remove the pair with the namespace, batched and without anyone waiting. A
// link that is already gone counts as dying.
func Dying(ns *netns.NS, name string) (bool, error) {
	h, err := ns.Netlink()
	if err != nil {
		return false, err
	}
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if l.Type() != "veth" {
		return false, nil
	}
	if l.Attrs().NetNsID < 0 {
		return IsDying(l, func(index int) netlink.Link {
			peer, _ := h.LinkByIndex(index)
			return peer
		}), nil
	}
	return peerNamespaceGone(ns, l.Attrs().NetNsID)
}

// peerNamespaceGone asks the kernel for the namespace behind a namespace id: it
// refuses (ENOENT) once the namespace's last reference is gone, even before its
// cleanup has started and the id is dropped.
func peerNamespaceGone(ns *netns.NS, id int) (bool, error) {
	req, err := routeRequest(ns, unix.RTM_GETNSID, unix.NLM_F_ACK)
	if err != nil {
		return false, err
	}
	req.AddData(nl.NewRtGenMsg())
	req.AddData(nl.NewRtAttr(netlink.NETNSA_NSID, nl.Uint32Attr(uint32(id))))
	_, err = req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNSID)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.ENOENT):
		return true, nil
	}
	return false, fmt.Errorf("look up peer namespace %d: %w", id, err)
}

// IsDying reports, for a link already read, whether it is a veth whose peer's
// namespace the kernel has begun to destroy: such a veth names no peer namespace.
// byIndex finds a link of the same namespace by index (nil if none): a veth with both
// ends in one namespace names no peer namespace either, and is not dying.
func IsDying(l netlink.Link, byIndex func(int) netlink.Link) bool {
	if l.Type() != "veth" || l.Attrs().NetNsID >= 0 {
		return false
	}
	peer := byIndex(l.Attrs().ParentIndex)
	return peer == nil || peer.Type() != "veth" || peer.Attrs().ParentIndex != l.Attrs().Index
}
