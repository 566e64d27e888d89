package link

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/netns"
)

// RetiredGroup is the device group of links taken out of service and left to be
// deleted by DeleteRetired. Deleting a link makes whoever asks wait for RCU grace
// periods (about 20 ms on the test machine, rcu_barrier in netdev_run_todo) after
// the link is already gone from every table; a retired link needs nobody to wait.
const RetiredGroup uint32 = 0x63746e78 // "ctnx"

// Retiring names a host link to take out of service and, for a veth, its container
// end and the name that end takes meanwhile.
type Retiring struct {
	Name string
	// Peer is the veth's container end in PeerNS (nil: its namespace is gone);
	// PeerRetired the name it is given so that Peer is free there at once (a runtime
	// may attach it again).
	Peer, PeerRetired string
	PeerNS            *netns.NS
}

// Retire takes a link out of service at once: it goes down and leaves its bridge
// (frames to and from a down device are dropped, and a veth whose other end is
// down has no carrier), and a veth's container end goes down and is renamed to
// r.PeerRetired. The link stays in ctnet's group until Mark; restore puts
// everything back (the change that retired it failed). A link already gone is
// nothing to retire.
func Retire(host *netns.NS, r Retiring) (restore func() error, err error) {
	h, err := host.Netlink()
	if err != nil {
		return nil, err
	}
	l, err := h.LinkByName(r.Name)
	if isNotFound(err) {
		return func() error { return nil }, nil
	}
	if err != nil {
		return nil, err
	}
	attrs := l.Attrs()
	if err := setLink(host, attrs.Index, 0, nl.Uint32Attr(0)); err != nil {
		return nil, fmt.Errorf("take %s out of service: %w", r.Name, err)
	}
	restoreHost := func() error {
		return setLink(host, attrs.Index, unix.IFF_UP, nl.Uint32Attr(uint32(attrs.MasterIndex)))
	}
	if l.Type() != "veth" || r.PeerNS == nil {
		return restoreHost, nil
	}
	ph, err := r.PeerNS.Netlink()
	if err != nil {
		return nil, errors.Join(err, restoreHost())
	}
	peer, err := ph.LinkByName(r.Peer)
	if isNotFound(err) || err == nil && peer.Attrs().Index != attrs.ParentIndex {
		return restoreHost, nil // not this pair's: its end is gone already
	}
	if err != nil {
		return nil, errors.Join(err, restoreHost())
	}
	restorePeer := func() error {
		return errors.Join(ph.LinkSetName(peer, r.Peer), ph.LinkSetUp(peer), restoreHost())
	}
	// Only a device that is down can be renamed.
	if err = ph.LinkSetDown(peer); err == nil {
		err = ph.LinkSetName(peer, r.PeerRetired)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("take %s of %s out of service: %w", r.Peer, r.Name, err), restorePeer())
	}
	return restorePeer, nil
}

// Mark moves a retired link into RetiredGroup, for DeleteRetired. It is done once
// the removal is recorded: a link marked earlier could be deleted by another
// command's DeleteRetired while its own removal might still be undone.
func Mark(host *netns.NS, name string) error {
	sock, err := host.RouteSocket()
	if err != nil {
		return err
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: sock}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(RetiredGroup)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !isNotFound(err) {
		return fmt.Errorf("mark %s for deletion: %w", name, err)
	}
	return nil
}

// DeleteRetired deletes every link of RetiredGroup in ns in one request: the
// kernel unregisters them together (unregister_netdevice_many), so links that
// several removals retired share one wait for the grace periods. Having none is
// success.
func DeleteRetired(ns *netns.NS) error {
	sock, err := ns.RouteSocket()
	if err != nil {
		return err
	}
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: sock}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(RetiredGroup)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete links retired in %s: %w", ns.Path(), err)
	}
	return nil
}

// setLink brings a host link up or down, as flags says, and makes it a port of
// master (0: of none), in one request.
func setLink(host *netns.NS, index int, flags uint32, master []byte) error {
	sock, err := host.RouteSocket()
	if err != nil {
		return err
	}
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: sock}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index, msg.Flags, msg.Change = int32(index), flags, unix.IFF_UP
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, master))
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}
