package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/fault"
	"github.com/ctnet/ctnet/netns"
)

// Macvlan describes a container's interface on a macvlan network: a macvlan device
// in bridge mode on the host's parent interface, in the container's namespace.
type Macvlan struct {
	ParentIndex int // in the host's namespace
	Name        string
	MTU         int
	MAC         net.HardwareAddr
	NS          *netns.NS
}

// AddMacvlan creates the interface in one request on the host's side, born inside
// the container's namespace, so that it never exists in the host's, and turns IPv6
// off on it. It returns the interface's index inside the namespace; the interface
// stays down until ConfigureIface brings it up. On
// error nothing is left behind. The device goes with the namespace, or is deleted
// there (an attached namespace).
func AddMacvlan(host *netns.NS, v Macvlan) (index int, err error) {
	if j := host.Journal(); j != nil {
		return 0, j.Unsupported("macvlan networks' containers")
	}
	h, err := host.Netlink()
	if err != nil {
		return 0, err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU, attrs.ParentIndex, attrs.HardwareAddr, attrs.Group = v.Name, v.MTU, v.ParentIndex, v.MAC, Group
	attrs.Namespace = netlink.NsFd(v.NS.Fd())
	if err := h.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
		switch {
		case errors.Is(err, unix.EEXIST):
			return 0, fmt.Errorf("create macvlan %s: the container already has an interface of that name", v.Name)
		case errors.Is(err, unix.EADDRINUSE):
			return 0, fmt.Errorf("create macvlan %s: another interface on the parent already has the MAC %s", v.Name, v.MAC)
		}
		return 0, fmt.Errorf("create macvlan %s: %w", v.Name, err)
	}
	fault.Point("create macvlan " + v.Name)
	defer func() {
		if err != nil {
			if derr := Delete(v.NS, v.Name); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	// Down until IPv6 is off: up on a live segment, it would configure itself from
	// the segment's router advertisements at once.
	if err := disableIPv6(v.NS, v.Name); err != nil {
		return 0, err
	}
	return indexOf(v.NS, v.Name)
}

// DeleteMacvlans deletes the macvlan interfaces ctnet made in a namespace (those of
// its group), and returns their names: before a namespace is given up, so that they
// leave their parent now rather than in the kernel's later cleanup of the namespace.
func DeleteMacvlans(ns *netns.NS) ([]string, error) {
	links, err := List(ns)
	if err != nil {
		return nil, err
	}
	var deleted []string
	for _, l := range links {
		if l.Type() != "macvlan" || l.Attrs().Group != Group {
			continue
		}
		if err := Delete(ns, l.Attrs().Name); err != nil {
			return deleted, err
		}
		deleted = append(deleted, l.Attrs().Name)
	}
	return deleted, nil
}
