package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/ctnet/ctnet/ipam"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/store"
)

// Network drivers, as Docker names them. A macvlan network has no bridge, no
// firewall entries and no masquerade: its containers have macvlan interfaces (bridge
// mode) on a host interface, the parent, with their own addresses on its segment,
// whose router is the gateway.
const (
	DriverBridge  = "bridge"
	DriverMacvlan = "macvlan"
)

func isMacvlan(n *store.Network) bool { return n.Driver == DriverMacvlan }

// wantsMacvlan reports whether spec asks for another driver than the bridge, or
// for what only a macvlan network has.
func (spec NetworkSpec) wantsMacvlan() bool {
	return spec.Driver != "" && spec.Driver != DriverBridge || spec.Parent != ""
}

// planMacvlan validates a macvlan network's spec against the store and the host and
// fills in n; it changes nothing. Its subnet is the parent's segment, which the
// host's own routes and addresses usually reach already: only other networks'
// subnets are a conflict.
func (m *Manager) planMacvlan(tx *store.Tx, n *store.Network, spec NetworkSpec) (*store.Network, error) {
	switch spec.Driver {
	case DriverMacvlan:
	case "", DriverBridge:
		return nil, invalid("--parent names a macvlan network's host interface: use it with -d macvlan")
	case "ipvlan":
		return nil, badField("Driver", spec.Driver, "ipvlan is not available in this kernel: use macvlan, which puts containers on the parent's segment too")
	default:
		return nil, badField("Driver", spec.Driver, "use bridge or macvlan")
	}
	switch {
	case spec.Parent == "":
		return nil, invalid("a macvlan network needs --parent: use the host interface whose segment its containers join, e.g. --parent eth0")
	case spec.Subnet == "":
		return nil, invalid("a macvlan network needs --subnet: use the parent segment's, e.g. --subnet 192.168.1.0/24")
	case spec.Bridge != "":
		return nil, invalid("a macvlan network has no bridge: drop --bridge, use --parent")
	case spec.Internal:
		return nil, invalid("a macvlan network's containers are on the parent's segment, which ctnet does not close: drop --internal, or use a bridge network")
	case spec.Masquerade != nil:
		return nil, invalid("a macvlan network's containers use their own addresses on the segment: drop --opt masquerade")
	case spec.IPv6 || spec.NoIPv4:
		return nil, invalid("a macvlan network is IPv4 here: drop --ipv6 and --ipv4=false, or use a bridge network")
	case len(spec.NonMasquerade) > 0:
		return nil, invalid("a macvlan network masquerades nothing: drop --opt non-masquerade, or use it on a bridge network")
	}
	n.Driver, n.Parent, n.Masquerade = DriverMacvlan, spec.Parent, false
	if err := link.CheckName(spec.Parent); err != nil {
		return nil, &FieldError{Field: "Parent", Value: spec.Parent, Err: err}
	}
	parent, err := link.ByName(m.host, spec.Parent)
	if errors.Is(err, link.ErrNotFound) {
		return nil, badField("Parent", spec.Parent, "the host has no interface of that name: use one that `ip link` lists, e.g. eth0")
	}
	if err != nil {
		return nil, err
	}
	if _, _, ours := link.Owner(parent); ours {
		return nil, badField("Parent", spec.Parent, "it is one of ctnet's own interfaces: use the host's interface on the segment")
	}
	if parent.Attrs().Flags&net.FlagLoopback != 0 {
		return nil, badField("Parent", spec.Parent, "it is the loopback interface: use the host's interface on the segment")
	}
	if n.MTU == 0 {
		n.MTU = parent.Attrs().MTU
	}
	if n.MTU < 68 || n.MTU > parent.Attrs().MTU {
		return nil, badField("MTU", strconv.Itoa(n.MTU), "use a value from 68 to the parent's MTU, %d", parent.Attrs().MTU)
	}
	networks, err := tx.Networks()
	if err != nil {
		return nil, err
	}
	if err := m.pickSubnet(n, spec, networks); err != nil {
		return nil, err
	}
	return n, planIPRange(n, spec.IPRange)
}

// planIPRange sets the part of n's subnet that addresses are allocated from, as
// Docker's --ip-range: a prefix inside the subnet, whose own first and last
// addresses are left out as a subnet's are.
func planIPRange(n *store.Network, s string) error {
	if s == "" {
		return nil
	}
	r, err := ipam.ParseSubnet(s)
	if err != nil {
		return &FieldError{Field: "IPRange", Value: s, Err: err}
	}
	if r.Bits() < n.Subnet.Bits() || !n.Subnet.Contains(r.Addr()) {
		return badField("IPRange", s, "use a part of the subnet %s", n.Subnet)
	}
	n.IPRange = r
	return nil
}

// addressPool is where n's addresses are allocated from: its IP range, or its subnet.
func addressPool(n *store.Network) netip.Prefix {
	if n.IPRange.IsValid() {
		return n.IPRange
	}
	return n.Subnet
}

// plumbMacvlan creates a container's macvlan interface on the network's parent and
// configures it: address, and for eth0 the default route via the segment's router.
func (m *Manager) plumbMacvlan(o *op, c *store.Container, n *store.Network, att *store.Attachment) error {
	ns, err := o.open(c.NetNS)
	if err != nil {
		return err
	}
	parent, err := link.ByName(m.host, n.Parent)
	if errors.Is(err, link.ErrNotFound) {
		return fmt.Errorf("%w: the parent %s of macvlan network %s is gone from the host: create it again, or remove the network", ErrConflict, n.Parent, n.Name)
	}
	if err != nil {
		return err
	}
	index, err := link.AddMacvlan(m.host, link.Macvlan{ParentIndex: parent.Attrs().Index, Name: att.IfName, MTU: n.MTU, MAC: link.MACFor(att.IP), NS: ns})
	if err != nil {
		return err
	}
	o.undo.push("create macvlan "+att.IfName+" of "+c.Name, func() error { return link.Delete(ns, att.IfName) })
	iface := link.Iface{Index: index, Address: netip.PrefixFrom(att.IP, att.PrefixLen)}
	if att.IfName == "eth0" {
		iface.Gateway = att.Gateway
	}
	if err := link.ConfigureIface(ns, iface); err != nil {
		return err
	}
	o.step("configure " + att.IfName)
	return nil
}

// removeMacvlans deletes a container's macvlan interfaces, before its own namespace
// goes: the kernel would destroy them with it, but later, in a batched cleanup, and
// until then their MACs stay taken on the parent (an address given again at once
// would be refused) and the parent promiscuous.
func (m *Manager) removeMacvlans(o *op, c *store.Container) error {
	for i := range c.Attachments {
		if a := &c.Attachments[i]; a.HostVeth == "" {
			if err := m.removeMacvlan(o, c, a); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeMacvlan deletes a container's macvlan interface. A namespace that is gone
// took it with it.
func (m *Manager) removeMacvlan(o *op, c *store.Container, att *store.Attachment) error {
	ns, err := o.open(c.NetNS)
	if err != nil {
		// Removed, or its file no longer a namespace (a runtime's DEL after it
		// removed the namespace): the interface went with it.
		return nil
	}
	if err := link.Delete(ns, att.IfName); err != nil {
		return err
	}
	o.step("delete macvlan " + att.IfName + " of " + c.Name)
	return nil
}

// macvlanPresent reports whether a container's macvlan interface is in its namespace.
func (m *Manager) macvlanPresent(o *op, c *store.Container, att *store.Attachment) (bool, error) {
	ns, err := o.open(c.NetNS)
	if err != nil {
		return false, err
	}
	l, err := link.ByName(ns, att.IfName)
	if errors.Is(err, link.ErrNotFound) {
		return false, nil
	}
	return err == nil && l.Type() == "macvlan", err
}

// checkMacvlanSpec refuses for a macvlan network what only a host veth can give.
func checkMacvlanSpec(n *store.Network, ports []PortSpec, limits Bandwidth) error {
	switch {
	case !isMacvlan(n):
		return nil
	case len(ports) > 0:
		return invalid("network %s is macvlan: its containers are reached at their own addresses on the segment; drop -p, or use a bridge network", n.Name)
	case !limits.IsZero():
		return invalid("network %s is macvlan: bandwidth limits shape a host veth, which it does not have; drop --ingress-rate and --egress-rate, or use a bridge network", n.Name)
	}
	return nil
}

// bridgeNetworks counts the networks with a bridge: those that need the firewall's
// tables and IPv4 forwarding.
func bridgeNetworks(networks []*store.Network) int {
	count := 0
	for _, n := range networks {
		if !isMacvlan(n) {
			count++
		}
	}
	return count
}
