// Package link creates and removes the interfaces, addresses and routes of ctnet's
// networks and containers, over netlink handles bound to each namespace.
//
// Ensure* functions are idempotent; Delete* functions treat "already gone" as
// success, so teardown can always be repeated.
package link

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/fault"
	"github.com/ctnet/ctnet/netns"
)

// MaxNameLen is the longest interface name the kernel accepts (IFNAMSIZ - 1).
const MaxNameLen = 15

// ErrNotFound is returned when a link does not exist.
var ErrNotFound = errors.New("link not found")

// Owner tags written as the link alias mark ctnet's links, so garbage collection
// recognises exactly what ctnet made.
const (
	aliasPrefix          = "ctnet:"
	networkAliasPrefix   = aliasPrefix + "network:"
	containerAliasPrefix = aliasPrefix + "container:"
)

// NetworkAlias is the alias of a network's bridge.
func NetworkAlias(networkID string) string { return networkAliasPrefix + networkID }

// ContainerAlias is the alias of a container's host-side veth.
func ContainerAlias(containerID string) string { return containerAliasPrefix + containerID }

// ParseAlias returns the kind ("network" or "container") and ID of a ctnet alias.
func ParseAlias(alias string) (kind, id string, ok bool) {
	switch {
	case strings.HasPrefix(alias, networkAliasPrefix):
		return "network", alias[len(networkAliasPrefix):], true
	case strings.HasPrefix(alias, containerAliasPrefix):
		return "container", alias[len(containerAliasPrefix):], true
	}
	return "", "", false
}

// Group is the device group of every link ctnet creates. Unlike the alias, which the
// kernel takes only once a link exists, the group is set by the request that creates
// the link: a link of this group without an alias is one ctnet made and died before
// tagging.
const Group uint32 = 0x63746e74 // "ctnt"

// Untagged is the kind Owner gives a link of ctnet's group without an alias.
const Untagged = "untagged"

// Owner says whose a link is: the kind and ID of its alias, or kind Untagged for a
// link ctnet created but did not tag.
func Owner(l netlink.Link) (kind, id string, ok bool) {
	if kind, id, ok := ParseAlias(l.Attrs().Alias); ok {
		return kind, id, true
	}
	if l.Attrs().Alias == "" && l.Attrs().Group == Group {
		return Untagged, "", true
	}
	return "", "", false
}

// CheckName says why name cannot be an interface name, or nil. It allows less than
// the kernel does: one alphabet that is safe everywhere the name goes — netlink, nft
// strings, file names under /proc/sys/net — and no '%', which the kernel would
// replace with a number (`br%d` becomes br0), creating a link ctnet cannot find.
func CheckName(name string) error {
	const use = "use letters, digits, '-', '_' or '.', at most 15 of them"
	switch {
	case name == "":
		return fmt.Errorf("interface name is empty: %s", use)
	case len(name) > MaxNameLen:
		return fmt.Errorf("interface name %q is %d bytes long: the kernel allows at most %d", name, len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed: %s, other than '.' and '..'", name, use)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("interface name %q contains %q: %s", name, r, use)
		}
	}
	return nil
}

// retryDump repeats a netlink dump the kernel interrupted because the table changed
// while it was being read.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var (
		res []T
		err error
	)
	for range 10 {
		res, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return res, err
		}
	}
	return res, err
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// ByName returns the link called name in ns, or ErrNotFound.
func ByName(ns *netns.NS, name string) (netlink.Link, error) {
	h, err := ns.Netlink()
	if err != nil {
		return nil, err
	}
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return l, err
}

// List returns every link of ns.
func List(ns *netns.NS) ([]netlink.Link, error) {
	h, err := ns.Netlink()
	if err != nil {
		return nil, err
	}
	return retryDump(h.LinkList)
}

// MACFor derives a stable, locally administered MAC from an IPv4 address, as Docker
// does (02:42 followed by the address), so a container's MAC follows its address. An
// IPv6 address (of an IPv6-only network) gives 02:43 followed by four bytes of a hash
// of the whole address: its last four bytes alone would give every network's
// gateway ::1 one MAC.
func MACFor(ip netip.Addr) net.HardwareAddr {
	if ip.Is4() {
		a := ip.As4()
		return net.HardwareAddr{0x02, 0x42, a[0], a[1], a[2], a[3]}
	}
	h := fnv.New32a()
	a := ip.As16()
	h.Write(a[:])
	v := h.Sum32()
	return net.HardwareAddr{0x02, 0x43, byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// Bridge describes a network's bridge.
type Bridge struct {
	Name    string
	MTU     int
	Gateway netip.Prefix // the bridge's address: gateway/subnet bits; invalid without IPv4
	// Gateway6 is the bridge's IPv6 address with the subnet's bits; without one the
	// bridge has IPv6 off.
	Gateway6 netip.Prefix
	Alias    string
}

// EnsureBridge makes the bridge exist, up, with its MTU, its gateway addresses and
// IPv6 off unless it has an IPv6 gateway; it reports whether it created the link. An existing link of another
// kind, or a bridge that another owner tagged, is a conflict.
//
// The alias comes last: a tagged bridge is a finished one, which gc trusts, and an
// untagged one of ctnet's group is what an interrupted command left, which gc
// finishes or removes. A crash point follows each change.
func EnsureBridge(ns *netns.NS, b Bridge) (index int, created bool, err error) {
	h, err := ns.Netlink()
	if err != nil {
		return 0, false, err
	}
	l, err := h.LinkByName(b.Name)
	tag := false
	switch {
	case err == nil:
		if l.Type() != "bridge" {
			return 0, false, fmt.Errorf("ensure bridge %s: an interface of type %s already has that name", b.Name, l.Type())
		}
		if kind, _, _ := Owner(l); kind == Untagged && b.Alias != "" {
			tag = true // ctnet made it and died before finishing it: finish the job
		} else if l.Attrs().Alias != b.Alias {
			return 0, false, fmt.Errorf("ensure bridge %s: the bridge exists but does not belong to this network (alias %q)", b.Name, l.Attrs().Alias)
		}
	case isNotFound(err):
		attrs := netlink.NewLinkAttrs()
		// Made down, and brought up below once IPv6 is off: an empty bridge has a
		// carrier as it comes up, and IPv6 would configure itself on it at once.
		attrs.Name, attrs.MTU, attrs.Group = b.Name, b.MTU, Group
		// A MAC set explicitly stays: the bridge would otherwise take its ports' lowest
		// and change as they come and go. Derived from the gateway address, it is the
		// same when the bridge is made again (after a reboot, or by gc), so containers'
		// neighbour entries for the gateway stay right.
		gw := b.Gateway.Addr()
		if !gw.IsValid() {
			gw = b.Gateway6.Addr()
		}
		attrs.HardwareAddr = MACFor(gw)
		br := &netlink.Bridge{LinkAttrs: attrs}
		add := netns.Change{Argv: []string{"ip", "link", "add", b.Name, "mtu", strconv.Itoa(b.MTU), "group", groupArg, "address", attrs.HardwareAddr.String(), "type", "bridge"}}
		if err := ns.Change(add, func() error { return h.LinkAdd(br) }); err != nil {
			return 0, false, fmt.Errorf("create bridge %s: %w", b.Name, err)
		}
		created = true
		fault.Point("create bridge " + b.Name + " untagged")
		if ns.DryRun() {
			l = br // as made: down, with its MTU; nothing to read back
		} else if l, err = h.LinkByName(b.Name); err != nil {
			return 0, true, fmt.Errorf("create bridge %s: %w", b.Name, err)
		}
		// The kernel ignores an alias in the request that creates a link.
		tag = b.Alias != ""
	default:
		return 0, false, fmt.Errorf("look up bridge %s: %w", b.Name, err)
	}
	if b.Gateway6.IsValid() {
		err = enableIPv6(ns, b.Name)
	} else {
		err = disableIPv6(ns, b.Name)
	}
	if err != nil {
		return l.Attrs().Index, created, err
	}
	if l.Attrs().MTU != b.MTU {
		if err := ns.Change(setLink(b.Name, "mtu", strconv.Itoa(b.MTU)), func() error { return h.LinkSetMTU(l, b.MTU) }); err != nil {
			return l.Attrs().Index, created, fmt.Errorf("set MTU of %s: %w", b.Name, err)
		}
		fault.Point("set MTU of bridge " + b.Name)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := ns.Change(setLink(b.Name, "up"), func() error { return h.LinkSetUp(l) }); err != nil {
			return l.Attrs().Index, created, fmt.Errorf("bring up %s: %w", b.Name, err)
		}
		fault.Point("bring up bridge " + b.Name)
	}
	for _, gw := range []netip.Prefix{b.Gateway, b.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		// No duplicate address detection: the gateway is usable at once, and on
		// ctnet's own bridge nobody else may claim it.
		addr := &netlink.Addr{IPNet: ipNet(gw), Flags: unix.IFA_F_NODAD}
		if err := ns.Change(addrChange("replace", gw, b.Name), func() error { return h.AddrReplace(l, addr) }); err != nil {
			return l.Attrs().Index, created, fmt.Errorf("add address %s to %s: %w", gw, b.Name, err)
		}
	}
	if tag {
		fault.Point("add address " + b.Gateway.String() + " to bridge " + b.Name + " untagged")
		if err := ns.Change(setLink(b.Name, "alias", b.Alias), func() error { return h.LinkSetAlias(l, b.Alias) }); err != nil {
			return l.Attrs().Index, created, fmt.Errorf("tag bridge %s: %w", b.Name, err)
		}
	}
	return l.Attrs().Index, created, nil
}

// Delete removes the link called name. A link that does not exist is not an error.
func Delete(ns *netns.NS, name string) error {
	req, err := routeRequest(ns, unix.RTM_DELLINK, unix.NLM_F_ACK)
	if err != nil {
		return err
	}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	return ns.Change(netns.Change{Argv: []string{"ip", "link", "del", name}}, func() error {
		if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete link %s: %w", name, err)
		}
		return nil
	})
}

// Veth describes a veth pair whose host end joins a bridge and whose peer is born
// inside the container's namespace.
type Veth struct {
	HostName string
	// Master is the bridge the host end joins, MasterIndex its index (0 in a dry
	// run that makes the bridge in the same command).
	Master      string
	MasterIndex int
	MTU         int
	PeerName    string
	PeerNS      *netns.NS
	PeerMAC     net.HardwareAddr
	// IPv6 keeps IPv6 on in the peer, which then neither autoconfigures nor takes
	// router advertisements; the host end, a bridge port, has it off regardless.
	IPv6 bool
}

// AddVeth creates the pair in one netlink request — the host end enslaved and up, the
// peer born in its namespace with its MAC, so nothing is moved — and turns IPv6 off on
// the host end and, unless v.IPv6, on the peer. It returns the peer's interface index
// inside its namespace; the peer stays down until ConfigureIface brings it up. On
// error nothing is left behind. The host end stays untagged until FinishPort: a
// tagged veth is a finished one, which gc trusts.
func AddVeth(host *netns.NS, v Veth) (peerIndex int, err error) {
	req, err := routeRequest(host, unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	if err != nil {
		return 0, err
	}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(v.HostName)))
	req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(v.MTU))))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(Group)))
	if v.MasterIndex > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(v.MasterIndex))))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	peer := data.AddRtAttr(nl.VETH_INFO_PEER, nil)
	// The peer cannot be created up: the kernel opens it before pairing the two ends.
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(v.PeerName))
	peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(v.MTU)))
	if v.PeerMAC != nil {
		peer.AddRtAttr(unix.IFLA_ADDRESS, []byte(v.PeerMAC))
	}
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(v.PeerNS.Fd())))
	req.AddData(info)
	add := []string{"ip", "link", "add", v.HostName, "up", "mtu", strconv.Itoa(v.MTU), "group", groupArg}
	if v.Master != "" {
		add = append(add, "master", v.Master)
	}
	add = append(add, "type", "veth", "peer", "name", v.PeerName, "mtu", strconv.Itoa(v.MTU))
	if v.PeerMAC != nil {
		add = append(add, "address", v.PeerMAC.String())
	}
	add = append(add, "netns", v.PeerNS.Path())
	if err := host.Change(netns.Change{Argv: add}, func() error {
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	}); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("create veth %s: an interface called %s or %s already exists", v.HostName, v.HostName, v.PeerName)
		}
		return 0, fmt.Errorf("create veth %s: %w", v.HostName, err)
	}
	fault.Point("create veth " + v.HostName + " untagged")
	defer func() {
		if err != nil {
			// Deleting the host end deletes the pair.
			if derr := Delete(host, v.HostName); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	// While the peer is down the pair has no carrier, so IPv6 has configured nothing
	// on either end yet and turning it off is only a flag.
	if err := disableIPv6(host, v.HostName); err != nil {
		return 0, err
	}
	if v.IPv6 {
		err = enableIPv6(v.PeerNS, v.PeerName)
	} else {
		err = disableIPv6(v.PeerNS, v.PeerName)
	}
	if err != nil {
		return 0, err
	}
	if v.PeerNS.DryRun() {
		return 0, nil // neither the peer nor, maybe, its namespace exists: nothing to look up
	}
	return indexOf(v.PeerNS, v.PeerName)
}

// FinishPort sets the alias of an existing link and, with hairpin, turns on hairpin
// mode of the bridge port it is, in one request addressed by name so no lookup of its
// index is needed. Neither can ride along with the creation: the kernel ignores an
// alias in a request that creates a link, and applies bridge-port settings only to a
// port that already exists. Hairpin lets the bridge send a frame back out of the port
// it came in by: a container reaching its own published port through the host's
// address needs it.
func FinishPort(host *netns.NS, name, alias string, hairpin bool) error {
	if alias == "" && !hairpin {
		return nil
	}
	req, err := routeRequest(host, unix.RTM_NEWLINK, unix.NLM_F_ACK)
	if err != nil {
		return err
	}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	argv := []string{"ip", "link", "set", name}
	if alias != "" {
		req.AddData(nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(alias)))
		argv = append(argv, "alias", alias)
	}
	if hairpin {
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(nl.IFLA_INFO_SLAVE_KIND, nl.NonZeroTerminated("bridge"))
		data := info.AddRtAttr(nl.IFLA_INFO_SLAVE_DATA, nil)
		data.AddRtAttr(nl.IFLA_BRPORT_MODE, []byte{1})
		req.AddData(info)
		argv = append(argv, "type", "bridge_slave", "hairpin", "on")
	}
	if err := host.Change(netns.Change{Argv: argv}, func() error {
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	}); err != nil {
		return fmt.Errorf("set alias and hairpin mode of %s: %w", name, err)
	}
	return nil
}

// disableIPv6 turns IPv6 off on an interface, as Docker does on IPv4-only networks
// (and on the host ends of veths, mere bridge ports). With IPv6 on, the interface would take an
// address and a default route from any router advertisement on its link, a
// container's included, and answer neighbour discovery there. A kernel without IPv6
// has nothing to turn off.
func disableIPv6(ns *netns.NS, name string) error {
	err := ns.WriteSysctl("net/ipv6/conf/"+name+"/disable_ipv6", "1")
	if errors.Is(err, fs.ErrNotExist) && !ipv6Present(ns) {
		return nil
	}
	return err
}

// enableIPv6 keeps IPv6 on an interface of a network that has it, but without the
// parts that take orders from the link: no router advertisements (nor addresses
// and routes from them) and no duplicate address detection, since every address
// ctnet gives is static and unique. Written while the interface is down, before
// IPv6 is turned on, so nothing is configured from the link even for a moment.
func enableIPv6(ns *netns.NS, name string) error {
	for _, s := range []struct{ key, value string }{
		{"accept_ra", "0"}, {"autoconf", "0"}, {"accept_dad", "0"}, {"addr_gen_mode", "0"}, {"disable_ipv6", "0"},
	} {
		if err := ns.WriteSysctl("net/ipv6/conf/"+name+"/"+s.key, s.value); err != nil {
			if errors.Is(err, fs.ErrNotExist) && !ipv6Present(ns) {
				return fmt.Errorf("turn IPv6 on for %s: this kernel has no IPv6", name)
			}
			return err
		}
	}
	return nil
}

// ipv6Present reports whether the namespace's kernel has IPv6 (not booted with
// ipv6.disable=1, built with it).
func ipv6Present(ns *netns.NS) bool {
	_, err := ns.ReadSysctl("net/ipv6/conf/all/disable_ipv6")
	return !errors.Is(err, fs.ErrNotExist)
}

// Iface is the layer-3 set-up of a container interface: an address and gateway per
// family the network has.
type Iface struct {
	Index    int          // 0 in a dry run, whose interface was never made
	Name     string       // the interface, as the printed commands name it
	Address  netip.Prefix // the container's IPv4 address with the subnet's bits; none if invalid
	Gateway  netip.Addr   // default route via this address; none if invalid
	Address6 netip.Prefix // the container's IPv6 address; none if invalid
	Gateway6 netip.Addr   // IPv6 default route via this address; none if invalid
}

// ConfigureIface brings the interface up and adds the addresses and, for each
// gateway given, a default route, in one batch of requests. An IPv6 address is
// added without duplicate address detection: ctnet's IPAM made it unique, and it is
// usable (not "tentative") the moment this returns. On error the interface may have
// some of them: its undo, deleting it, takes them away with it.
func ConfigureIface(ns *netns.NS, i Iface) error {
	reqs := []request{{linkUpRequest(i.Index), setLink(i.Name, "up"), func(err error) error {
		return fmt.Errorf("bring up interface %d in the container: %w", i.Index, err)
	}}}
	for _, family := range []struct {
		address netip.Prefix
		gateway netip.Addr
		flags   uint8
	}{{i.Address, i.Gateway, 0}, {i.Address6, i.Gateway6, unix.IFA_F_NODAD}} {
		if !family.address.IsValid() {
			continue
		}
		reqs = append(reqs, request{addrRequest(i.Index, family.address, family.flags), addrChange("add", family.address, i.Name), func(err error) error {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add address %s: the container already has it", family.address)
			}
			return fmt.Errorf("add address %s: %w", family.address, err)
		}})
		if !family.gateway.IsValid() {
			continue
		}
		route := netns.Change{Argv: []string{"ip", "-4", "route", "add", "default", "via", family.gateway.String(), "dev", i.Name}}
		if family.gateway.Is6() {
			route.Argv[1] = "-6"
		}
		reqs = append(reqs, request{defaultRouteRequest(i.Index, family.gateway), route, func(err error) error {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add default route via %s: the container already has a default route", family.gateway)
			}
			return fmt.Errorf("add default route via %s: %w", family.gateway, err)
		}})
	}
	return sendBatch(ns, reqs)
}

// LoopbackUp brings lo up (a no-op if it is).
func LoopbackUp(ns *netns.NS) error {
	return sendBatch(ns, []request{{linkUpRequest(loopbackIndex), setLink("lo", "up"), func(err error) error {
		return fmt.Errorf("bring up loopback: %w", err)
	}}})
}

// indexOf returns the index of the interface called name in ns.
func indexOf(ns *netns.NS, name string) (int, error) {
	req, err := routeRequest(ns, unix.RTM_GETLINK, unix.NLM_F_ACK)
	if err != nil {
		return 0, err
	}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return 0, fmt.Errorf("find %s in the container: %w", name, err)
	}
	if len(msgs) == 0 || len(msgs[0]) < unix.SizeofIfInfomsg {
		return 0, fmt.Errorf("find %s in the container: no answer", name)
	}
	return int(nl.DeserializeIfInfomsg(msgs[0]).Index), nil
}

// groupArg is Group as ip link's group argument.
var groupArg = "0x" + strconv.FormatUint(uint64(Group), 16)

// setLink is the change `ip link set NAME ARGS...`.
func setLink(name string, args ...string) netns.Change {
	return netns.Change{Argv: append([]string{"ip", "link", "set", name}, args...)}
}

// addrChange is `ip addr VERB PREFIX dev NAME`: an IPv4 address with the broadcast
// address the netlink library adds below a /31, an IPv6 one without duplicate
// address detection (ip takes nodad for IPv6 addresses only).
func addrChange(verb string, p netip.Prefix, name string) netns.Change {
	argv := []string{"ip", "addr", verb, p.String()}
	if p.Addr().Is4() && p.Bits() < 31 {
		argv = append(argv, "brd", "+")
	}
	argv = append(argv, "dev", name)
	if p.Addr().Is6() {
		argv = append(argv, "nodad")
	}
	return netns.Change{Argv: argv}
}

// linksByIndex lists the namespace's links, with their names by index (routes,
// addresses and neighbours name their interface by index).
func linksByIndex(ns *netns.NS) (*netlink.Handle, []netlink.Link, map[int]string, error) {
	links, err := List(ns)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list links: %w", err)
	}
	h, err := ns.Netlink() // made by List, kept by ns
	if err != nil {
		return nil, nil, nil, err
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return h, links, names, nil
}
