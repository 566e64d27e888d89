package network

import (
	"net/netip"

	"github.com/ctnet/ctnet/ipam"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/store"
)

// pickSubnet6 gives n its IPv6 subnet and gateway: the spec's, checked against the
// other networks and the host's routes, or else the first free /64 of the pool.
func (m *Manager) pickSubnet6(n *store.Network, spec NetworkSpec, networks []*store.Network) error {
	uses, err := link.UsedPrefixes6(m.host)
	if err != nil {
		return err
	}
	ours := map[string]bool{}
	for _, other := range networks {
		ours[other.Bridge] = true
	}
	var hostUses []link.Use
	var taken []netip.Prefix
	for _, u := range uses {
		if !ours[u.Iface] {
			hostUses = append(hostUses, u)
			taken = append(taken, u.Prefix)
		}
	}
	for _, other := range networks {
		if other.Subnet6.IsValid() {
			taken = append(taken, other.Subnet6)
		}
	}
	if spec.Subnet6 == "" {
		if spec.Gateway6 != "" {
			return invalid("an IPv6 --gateway needs an IPv6 --subnet")
		}
		if n.Subnet6, err = ipam.PickSubnet6(m.pool6, taken); err != nil {
			return err
		}
		n.Gateway6 = ipam.FirstHost(n.Subnet6)
		return nil
	}
	if n.Subnet6, err = ipam.ParseSubnet6(spec.Subnet6); err != nil {
		return &FieldError{Field: "Subnet6", Value: spec.Subnet6, Err: err}
	}
	if err := refuseOverlap("Subnet6", n.Subnet6, networks, func(o *store.Network) netip.Prefix { return o.Subnet6 }, hostUses); err != nil {
		return err
	}
	n.Gateway6 = ipam.FirstHost(n.Subnet6)
	if spec.Gateway6 != "" {
		gw, err := ipam.ParseAddr6("address", spec.Gateway6)
		if err != nil {
			return &FieldError{Field: "Gateway6", Value: spec.Gateway6, Err: err}
		}
		if err := ipam.CheckAddr6("gateway", n.Subnet6, gw); err != nil {
			return &FieldError{Field: "Gateway6", Value: spec.Gateway6, Err: err}
		}
		n.Gateway6 = gw
	}
	return nil
}
