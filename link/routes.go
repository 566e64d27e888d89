package link

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/ctnet/ctnet/netns"
)

// Use is an IPv4 prefix the namespace already reaches directly.
type Use struct {
	Prefix netip.Prefix
	Kind   string // "route" or "address"
	Iface  string
}

func (u Use) String() string {
	if u.Kind == "address" {
		return fmt.Sprintf("address %s on %s", u.Prefix, u.Iface)
	}
	return fmt.Sprintf("route %s dev %s", u.Prefix, u.Iface)
}

// UsedPrefixes returns the destinations of the namespace's non-default IPv4 routes in
// the main table and the subnets of its addresses (loopback aside).
func UsedPrefixes(ns *netns.NS) ([]Use, error) {
	h, _, names, err := linksByIndex(ns)
	if err != nil {
		return nil, err
	}
	var out []Use
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 {
			out = append(out, Use{Prefix: p.Masked(), Kind: "route", Iface: names[r.LinkIndex]})
		}
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && !p.Addr().IsLoopback() {
			out = append(out, Use{Prefix: p, Kind: "address", Iface: names[a.LinkIndex]})
		}
	}
	return out, nil
}

// DefaultRouteMTU returns the MTU of the interface the IPv4 default route leaves by,
// or 0 if there is no default route.
func DefaultRouteMTU(ns *netns.NS) (int, error) {
	h, err := ns.Netlink()
	if err != nil {
		return 0, err
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return 0, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask) {
			if r.LinkIndex == 0 {
				continue
			}
			l, err := h.LinkByIndex(r.LinkIndex)
			if err != nil {
				return 0, fmt.Errorf("find default route interface: %w", err)
			}
			return l.Attrs().MTU, nil
		}
	}
	return 0, nil
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// UsedPrefixes6 is UsedPrefixes for IPv6: the destinations of the main table's
// non-default routes and the subnets of addresses, link-local, multicast and
// loopback aside (every interface has those, and no network's subnet can be one).
func UsedPrefixes6(ns *netns.NS) ([]Use, error) {
	h, _, names, err := linksByIndex(ns)
	if err != nil {
		return nil, err
	}
	global := func(p netip.Prefix) bool {
		a := p.Addr()
		return !a.IsLinkLocalUnicast() && !a.IsMulticast() && !a.IsLoopback()
	}
	var out []Use
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_V6) })
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 && global(p) {
			out = append(out, Use{Prefix: p.Masked(), Kind: "route", Iface: names[r.LinkIndex]})
		}
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V6) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && global(p) {
			out = append(out, Use{Prefix: p.Masked(), Kind: "address", Iface: names[a.LinkIndex]})
		}
	}
	return out, nil
}
