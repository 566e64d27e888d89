package link

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/netns"
)

// RetiredGroup is the device group of links taken out of service and left to be
// deleted by DeleteRetired. Deleting a link makes whoever asks wait for RCU grace
// periods (about 20 ms on the test machine, rcu_barrier in netdev_run_todo) after
// the link is already gone from every table; a retired link needs nobody to wait.
const RetiredGroup uint32 = 0x63746e78 // "ctnx"

// retiredGroupArg is RetiredGroup as ip link's group argument.
var retiredGroupArg = "0x" + strconv.FormatUint(uint64(RetiredGroup), 16)

// DeleteRetiredChange is DeleteRetired as a command line, for a journal: the
// deletion itself happens in another process, after the command.
var DeleteRetiredChange = netns.Change{Argv: []string{"ip", "link", "del", "group", retiredGroupArg}}

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

// Retired is a link Retire took out of service.
type Retired struct {
	r         Retiring
	host      *netns.NS
	index     int
	veth      bool
	peerIndex int // the container end's index in r.PeerNS
}

// Retire takes a host link out of service at once: it goes down, one request and
// one (expedited) RCU grace period. Frames to and from a down device are dropped, a
// bridge forwards nothing to a port that is down, and a veth whose host end is down
// has no carrier in the container, which cannot bring the host end up: toggling its
// own end does not. The link stays its bridge's port (leaving would cost a second
// grace period), and the container end keeps its addresses and routes, so Restore
// only brings it up again (the change that retired it failed). Finish, once the
// removal is recorded, frees the container end's name and hands the link on for
// deletion. A link already gone gives nil.
func Retire(host *netns.NS, r Retiring) (*Retired, error) {
	h, err := host.Netlink()
	if err != nil {
		return nil, err
	}
	l, err := h.LinkByName(r.Name)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	index := l.Attrs().Index
	err = host.Change(setLink(r.Name, "down"), func() error { return setUp(host, index, false) })
	if isNotFound(err) {
		return nil, nil // deleted meanwhile: with its namespace, by the kernel
	}
	if err != nil {
		return nil, fmt.Errorf("take %s out of service: %w", r.Name, err)
	}
	return &Retired{r: r, host: host, index: l.Attrs().Index, veth: l.Type() == "veth", peerIndex: l.Attrs().ParentIndex}, nil
}

// Restore brings a retired link up again.
func (x *Retired) Restore() error {
	if x == nil {
		return nil
	}
	err := x.host.Change(setLink(x.r.Name, "up"), func() error { return setUp(x.host, x.index, true) })
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("bring %s up again: %w", x.r.Name, err)
	}
	return nil
}

// Finish completes a retirement the store records: a veth's container end goes
// down and is renamed to r.PeerRetired, so that its name is free in its namespace
// at once (a runtime may attach it again), and the link joins RetiredGroup for
// DeleteRetired. Only then: a link marked earlier could be deleted by another
// command's DeleteRetired while its own change might still be undone, and the
// container end loses its routes when it goes down, which an undo would have to
// make again.
func (x *Retired) Finish() error {
	if x == nil {
		return nil
	}
	var rename error
	if x.veth && x.r.PeerNS != nil && x.peerIndex > 0 {
		rename = x.freePeerName()
	}
	return errors.Join(rename, Mark(x.host, x.r.Name))
}

func (x *Retired) freePeerName() error {
	h, err := x.r.PeerNS.Netlink()
	if err != nil {
		return err
	}
	peer, err := h.LinkByName(x.r.Peer)
	if isNotFound(err) || err == nil && peer.Attrs().Index != x.peerIndex {
		return nil // not this pair's: its end is gone already
	}
	if err != nil {
		return err
	}
	// Only a device that is down can be renamed.
	ns := x.r.PeerNS
	err = ns.Change(setLink(x.r.Peer, "down"), func() error { return h.LinkSetDown(peer) })
	if err == nil {
		err = ns.Change(setLink(x.r.Peer, "name", x.r.PeerRetired), func() error { return h.LinkSetName(peer, x.r.PeerRetired) })
	}
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("free the name %s of %s: %w", x.r.Peer, x.r.Name, err)
	}
	return nil
}

// Mark moves a link into RetiredGroup, for DeleteRetired.
func Mark(host *netns.NS, name string) error {
	if err := toRetiredGroup(host, name, false); err != nil {
		return fmt.Errorf("mark %s for deletion: %w", name, err)
	}
	return nil
}

// Discard takes a link the store no longer records out of service and hands it on
// for deletion in one request: down, and into RetiredGroup at once, since no undo
// can need it back. A link already gone is discarded.
func Discard(host *netns.NS, name string) error {
	if err := toRetiredGroup(host, name, true); err != nil {
		return fmt.Errorf("discard %s: %w", name, err)
	}
	return nil
}

// toRetiredGroup moves the link called name into RetiredGroup, and down with it if
// down, in one request. A link already gone is no error.
func toRetiredGroup(host *netns.NS, name string, down bool) error {
	req, err := routeRequest(host, unix.RTM_SETLINK, unix.NLM_F_ACK)
	if err != nil {
		return err
	}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	args := []string{"group", retiredGroupArg}
	if down {
		msg.Change = unix.IFF_UP
		args = append([]string{"down"}, args...)
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(RetiredGroup)))
	err = host.Change(setLink(name, args...), func() error {
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	})
	if isNotFound(err) {
		return nil
	}
	return err
}

// DeleteRetired deletes every link of RetiredGroup in ns in one request, and
// reports whether there were any: the kernel unregisters them together
// (unregister_netdevice_many), so links that several removals retired share one
// wait for the grace periods.
func DeleteRetired(ns *netns.NS) (deleted bool, err error) {
	req, err := routeRequest(ns, unix.RTM_DELLINK, unix.NLM_F_ACK)
	if err != nil {
		return false, err
	}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(RetiredGroup)))
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	switch {
	case err == nil:
		return true, nil
	case isNotFound(err):
		return false, nil
	}
	return false, fmt.Errorf("delete links retired in %s: %w", ns.Path(), err)
}

// setUp brings a link up or down by index.
func setUp(host *netns.NS, index int, up bool) error {
	req, err := routeRequest(host, unix.RTM_SETLINK, unix.NLM_F_ACK)
	if err != nil {
		return err
	}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index, msg.Change = int32(index), unix.IFF_UP
	if up {
		msg.Flags = unix.IFF_UP
	}
	req.AddData(msg)
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}
