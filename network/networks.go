package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/ipam"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/store"
)

// DefaultNetwork is the network containers join when none is named; it is created
// on first use with bridge DefaultBridge.
const (
	DefaultNetwork = "bridge"
	DefaultBridge  = "ctnet0"
	defaultMTU     = 1500
	ipv6MinMTU     = 1280
)

// NetworkSpec is what `network create` asks for. Zero values mean "choose".
type NetworkSpec struct {
	Name       string
	Subnet     string // CIDR; empty picks a free one from the pools
	Gateway    string // empty is the subnet's first address
	Bridge     string // empty is ct-<id>
	MTU        int    // 0 is the MTU of the host's default route interface
	Internal   bool
	Masquerade *bool // nil is true
	// ICC is whether containers of the network reach each other (Docker's
	// enable_icc); nil is true. Their way out and published ports work either way.
	ICC    *bool
	Labels map[string]string
	// NonMasquerade are CIDRs the network's traffic reaches without masquerade, and
	// whose hosts reach its containers by routing; only on a masquerading network.
	NonMasquerade []string
	// Driver is bridge (also "") or macvlan; Parent is a macvlan network's host
	// interface. IPRange is the part of the subnet addresses are allocated from
	// (default: all of it).
	Driver  string
	Parent  string
	IPRange string

	// IPv6 gives the network an IPv6 subnet too: Subnet6, or else a unique-local
	// /64 from the manager's IPv6 pool, with Gateway6 or else its first address.
	IPv6     bool
	Subnet6  string
	Gateway6 string
	// NoIPv4 makes an IPv6-only network (with IPv6); Subnet and Gateway stay empty.
	NoIPv4 bool
}

// CreateNetwork creates a network: its record, its bridge and its firewall entries.
func (m *Manager) CreateNetwork(ctx context.Context, spec NetworkSpec) (*Network, error) {
	var n *store.Network
	err := m.mutate(ctx, func(o *op) (err error) {
		n, err = m.createNetwork(o, spec)
		return err
	})
	if err != nil {
		return nil, err
	}
	return networkView(n), nil
}

func (m *Manager) createNetwork(o *op, spec NetworkSpec) (*store.Network, error) {
	n, err := m.planNetwork(o.tx, spec)
	if err != nil {
		return nil, err
	}
	if err := o.tx.PutNetwork(n); err != nil {
		return nil, err
	}
	if isMacvlan(n) {
		return n, nil // no bridge, no firewall
	}
	if _, err := m.plumbNetwork(o, n); err != nil {
		return nil, err
	}
	if err := m.applyFirewall(o, firewall.Change{Add: firewall.State{Networks: []firewall.Network{fwNetwork(n)}}}); err != nil {
		return nil, err
	}
	return n, nil
}

// planNetwork validates a spec against the store and the host and fills in defaults;
// it changes nothing.
func (m *Manager) planNetwork(tx *store.Tx, spec NetworkSpec) (*store.Network, error) {
	if err := checkName("network", spec.Name); err != nil {
		return nil, err
	}
	if isModeName(spec.Name) {
		return nil, invalid("network name %q is reserved for the --network mode of that name: choose another", spec.Name)
	}
	if _, err := tx.NetworkNamed(spec.Name); err == nil {
		return nil, tagged(ErrConflict, "network %s already exists", spec.Name)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err := checkLabels(spec.Labels); err != nil {
		return nil, err
	}
	n := &store.Network{
		ID: newID(), Name: spec.Name, Driver: "bridge", Internal: spec.Internal,
		Masquerade: !spec.Internal && (spec.Masquerade == nil || *spec.Masquerade),
		NoICC:      spec.ICC != nil && !*spec.ICC,
		Labels:     spec.Labels, Created: time.Now().UTC(), MTU: spec.MTU,
	}
	if spec.Internal && spec.Masquerade != nil && *spec.Masquerade {
		return nil, invalid("an --internal network has no way out: drop --opt masquerade=true")
	}
	if spec.wantsMacvlan() {
		return m.planMacvlan(tx, n, spec)
	}
	n.Bridge = spec.Bridge
	if n.Bridge == "" {
		n.Bridge = "ct-" + n.ID[:12]
	}
	if err := link.CheckName(n.Bridge); err != nil {
		return nil, &FieldError{Field: "Bridge", Value: n.Bridge, Err: err}
	}
	networks, err := tx.Networks()
	if err != nil {
		return nil, err
	}
	for _, other := range networks {
		if other.Bridge == n.Bridge {
			return nil, tagged(ErrConflict, "bridge %s is already used by network %s", n.Bridge, other.Name)
		}
	}
	if l, err := link.ByName(m.host, n.Bridge); err == nil {
		if _, _, ours := link.Owner(l); !ours || l.Type() != "bridge" {
			return nil, &FieldError{Field: "Bridge", Value: n.Bridge, Err: tagged(ErrConflict, "an interface of that name already exists on the host: choose another")}
		}
	} else if !errors.Is(err, link.ErrNotFound) {
		return nil, err
	}
	if spec.NoIPv4 {
		if !spec.IPv6 {
			return nil, invalid("a network needs IPv4 or IPv6: add --ipv6 to --ipv4=false")
		}
		if spec.Subnet != "" || spec.Gateway != "" {
			return nil, invalid("an IPv6-only network (--ipv4=false) has no IPv4 --subnet or --gateway")
		}
	} else if err := m.pickSubnet(n, spec, networks); err != nil {
		return nil, err
	}
	if n.NonMasquerade, err = parseNonMasquerade(spec, n.Masquerade); err != nil {
		return nil, err
	}
	if err := planIPRange(n, spec.IPRange); err != nil {
		return nil, err
	}
	if spec.IPv6 {
		if err := m.pickSubnet6(n, spec, networks); err != nil {
			return nil, err
		}
	} else if spec.Subnet6 != "" || spec.Gateway6 != "" {
		return nil, invalid("an IPv6 --subnet or --gateway needs --ipv6")
	}
	if n.MTU == 0 {
		mtu, err := link.DefaultRouteMTU(m.host)
		if err != nil {
			return nil, err
		}
		n.MTU = mtu
		if n.MTU == 0 {
			n.MTU = defaultMTU
		}
	}
	if n.MTU < 68 || n.MTU > 65535 {
		return nil, badField("MTU", strconv.Itoa(n.MTU), "use a value from 68 to 65535")
	}
	if n.Subnet6.IsValid() && n.MTU < ipv6MinMTU {
		// The kernel turns IPv6 off on an interface whose MTU is below it.
		return nil, badField("MTU", strconv.Itoa(n.MTU), "a network with IPv6 needs at least %d", ipv6MinMTU)
	}
	return n, nil
}

// refuseOverlap refuses a subnet the user chose (the spec's field) that overlaps
// another network's subnet of its family (subnetOf) or a prefix the host uses.
func refuseOverlap(field string, subnet netip.Prefix, networks []*store.Network, subnetOf func(*store.Network) netip.Prefix, hostUses []link.Use) error {
	clash := func(format string, args ...any) error {
		return &FieldError{Field: field, Value: subnet.String(), Err: tagged(ErrConflict, format+": choose another, or leave it out to get a free one", args...)}
	}
	for _, other := range networks {
		if o := subnetOf(other); o.IsValid() && o.Overlaps(subnet) {
			return clash("it overlaps %s of network %s", o, other.Name)
		}
	}
	for _, u := range hostUses {
		if u.Prefix.Overlaps(subnet) {
			return clash("it overlaps the host's %s", u)
		}
	}
	return nil
}

func (m *Manager) pickSubnet(n *store.Network, spec NetworkSpec, networks []*store.Network) error {
	uses, err := link.UsedPrefixes(m.host)
	if err != nil {
		return err
	}
	ours := map[string]bool{}
	for _, other := range networks {
		ours[other.Bridge] = true
	}
	// What is on ctnet's own bridges is accounted for by their networks.
	var hostUses []link.Use
	var taken []netip.Prefix
	for _, u := range uses {
		// A macvlan network's subnet is its parent's segment, which the host reaches.
		if !ours[u.Iface] && !isMacvlan(n) {
			hostUses = append(hostUses, u)
			taken = append(taken, u.Prefix)
		}
	}
	for _, other := range networks {
		if other.Subnet.IsValid() {
			taken = append(taken, other.Subnet)
		}
	}
	if spec.Subnet == "" {
		if spec.Gateway != "" {
			return invalid("--gateway needs --subnet")
		}
		n.Subnet, err = ipam.PickSubnet(m.pools, taken)
		if err != nil {
			return err
		}
		n.Gateway = ipam.FirstHost(n.Subnet)
		return nil
	}
	n.Subnet, err = ipam.ParseSubnet(spec.Subnet)
	if err != nil {
		return invalid("%v", err)
	}
	if err := refuseOverlap("Subnet", n.Subnet, networks, func(o *store.Network) netip.Prefix { return o.Subnet }, hostUses); err != nil {
		return err
	}
	n.Gateway = ipam.FirstHost(n.Subnet)
	if spec.Gateway != "" {
		gw, err := ipam.ParseAddr("address", spec.Gateway)
		if err != nil {
			return &FieldError{Field: "Gateway", Value: spec.Gateway, Err: err}
		}
		if err := ipam.CheckAddr("gateway", n.Subnet, gw); err != nil {
			return &FieldError{Field: "Gateway", Value: spec.Gateway, Err: err}
		}
		n.Gateway = gw
	}
	return nil
}

func fwNetwork(n *store.Network) firewall.Network {
	return firewall.Network{Bridge: n.Bridge, Subnet: n.Subnet, Subnet6: n.Subnet6, Internal: n.Internal, Masquerade: n.Masquerade, NonMasquerade: n.NonMasquerade, NoICC: n.NoICC}
}

// plumbNetwork makes the network's bridge and sysctls exist.
func (m *Manager) plumbNetwork(o *op, n *store.Network) (bridgeIndex int, err error) {
	var gw, gw6 netip.Prefix
	if n.Subnet.IsValid() {
		gw = netip.PrefixFrom(n.Gateway, n.Subnet.Bits())
	}
	if n.Subnet6.IsValid() {
		gw6 = netip.PrefixFrom(n.Gateway6, n.Subnet6.Bits())
	}
	index, created, err := link.EnsureBridge(m.host, link.Bridge{Name: n.Bridge, MTU: n.MTU, Gateway: gw, Gateway6: gw6, Alias: link.NetworkAlias(n.ID)})
	if created && o.dryRun() {
		if o.plannedBridges == nil {
			o.plannedBridges = map[string]bool{}
		}
		o.plannedBridges[n.Bridge] = true
	}
	if created {
		o.undo.push("create bridge "+n.Bridge, func() error { return link.Delete(m.host, n.Bridge) })
	}
	if err != nil {
		return 0, err
	}
	if !created {
		o.step("set up bridge " + n.Bridge) // its MTU, state and address, if they had changed
	}
	if _, err := m.enableForwarding(o); err != nil {
		return 0, err
	}
	if n.Subnet6.IsValid() {
		if _, err := m.enableForwarding6(o); err != nil {
			return 0, err
		}
	}
	// 127.0.0.1:PORT published ports are DNAT'd out of this bridge with a loopback
	// source. It would also let containers reach the host's loopback, were it not for
	// the firewall's raw chain.
	if err := m.host.WriteSysctl("net/ipv4/conf/"+n.Bridge+"/route_localnet", "1"); err != nil {
		return 0, err
	}
	o.step("set route_localnet on " + n.Bridge)
	return index, nil
}

// RemoveNetwork removes networks. A network with running containers is refused unless
// force, which disconnects them first.
func (m *Manager) RemoveNetwork(ctx context.Context, name string, force bool) error {
	return m.mutate(ctx, func(o *op) error {
		n, err := o.tx.Network(name)
		if err != nil {
			return notFound("network", name, err)
		}
		users, err := m.networkUsers(o, n)
		if err != nil {
			return err
		}
		if len(users) > 0 && !force {
			names := make([]string, len(users))
			for i, c := range users {
				names[i] = c.Name
			}
			return fmt.Errorf("%w: network %s has running containers (%s): remove them first, or use --force to disconnect them",
				ErrConflict, n.Name, quoteList(names))
		}
		for _, c := range users {
			if err := m.disconnect(o, c, n); err != nil {
				return err
			}
		}
		return m.removeNetwork(o, n)
	})
}

func (m *Manager) removeNetwork(o *op, n *store.Network) error {
	if isMacvlan(n) {
		return o.tx.DeleteNetwork(n) // its containers' interfaces went with them
	}
	if err := m.applyFirewall(o, firewall.Change{Remove: firewall.State{Networks: []firewall.Network{fwNetwork(n)}}}); err != nil {
		return err
	}
	// Deleting the bridge would wait for RCU grace periods (about 20 ms). Once the
	// store no longer records it, it goes down — its routes go with it, so its
	// subnet serves a new network at once — and is handed on for deletion
	// (Manager.deleteRetiredLinks). A crash before that leaves a bridge of no
	// network, which gc deletes.
	o.afterCommit("hand bridge "+n.Bridge+" on for deletion", func() error { return link.Discard(m.host, n.Bridge) })
	o.retired = true
	if err := o.tx.DeleteNetwork(n); err != nil {
		return err
	}
	remaining, err := o.tx.Networks()
	if err != nil {
		return err
	}
	if bridgeNetworks(remaining) == 0 {
		// Nothing needs the tables any more: leave the host's ruleset as it was.
		if err := m.deleteFirewall(o); err != nil {
			return err
		}
		o.undo.push("delete firewall tables", func() error { return o.store.View(m.rebuildFirewall) })
	}
	if _, err = m.maybeDisableForwarding(o); err != nil {
		return err
	}
	_, err = m.maybeDisableForwarding6(o)
	return err
}

// networkUsers returns the live containers attached to n; dead ones found on the way
// are released, since only a live container may keep a network.
func (m *Manager) networkUsers(o *op, n *store.Network) ([]*store.Container, error) {
	leases, err := o.tx.Leases(n.ID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var users []*store.Container
	for _, id := range leases {
		if seen[id] {
			continue
		}
		seen[id] = true
		c, err := o.tx.Container(id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if c.State == store.StateExited {
			continue
		}
		if !isAlive(c) {
			if err := m.release(o, c, -1); err != nil {
				return nil, err
			}
			continue
		}
		users = append(users, c)
	}
	slices.SortFunc(users, func(a, b *store.Container) int { return strings.Compare(a.Name, b.Name) })
	return users, nil
}

// ensureDefaultNetwork returns the default network, creating it if needed.
func (m *Manager) ensureDefaultNetwork(o *op) (*store.Network, error) {
	n, err := o.tx.Network(DefaultNetwork)
	if err == nil {
		return n, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return m.createNetwork(o, NetworkSpec{Name: DefaultNetwork, Bridge: DefaultBridge})
}

// EnsureNetwork returns the network spec names when it exists and has what spec asks
// for (fields left to choose match anything), or else creates it, in one change: two
// callers ensuring one network both get it. A network of that name that differs is
// refused with ErrConflict, naming the difference; failures to create it are
// CreateNetwork's.
func (m *Manager) EnsureNetwork(ctx context.Context, spec NetworkSpec) (*Network, error) {
	var n *store.Network
	err := m.mutate(ctx, func(o *op) error {
		existing, err := o.tx.NetworkNamed(spec.Name)
		if err == nil {
			n = existing
			return checkSameNetwork(existing, spec)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		n, err = m.createNetwork(o, spec)
		return err
	})
	if err != nil {
		return nil, err
	}
	return networkView(n), nil
}

// checkSameNetwork refuses a network that differs from what spec asks for.
func checkSameNetwork(n *store.Network, spec NetworkSpec) error {
	differ := func(what string, have, want any) error {
		return tagged(ErrConflict, "network %s exists with %s %v, not %v: remove it, or ask for what it has", n.Name, what, have, want)
	}
	switch {
	case spec.Subnet != "" && n.Subnet.String() != spec.Subnet:
		return differ("subnet", n.Subnet, spec.Subnet)
	case spec.Gateway != "" && n.Gateway.String() != spec.Gateway:
		return differ("gateway", n.Gateway, spec.Gateway)
	case spec.Bridge != "" && n.Bridge != spec.Bridge:
		return differ("bridge", n.Bridge, spec.Bridge)
	case spec.IPv6 != n.Subnet6.IsValid():
		return differ("IPv6", n.Subnet6.IsValid(), spec.IPv6)
	case spec.NoIPv4 == n.Subnet.IsValid():
		return differ("IPv4", n.Subnet.IsValid(), !spec.NoIPv4)
	case spec.Subnet6 != "" && n.Subnet6.String() != spec.Subnet6:
		return differ("IPv6 subnet", n.Subnet6, spec.Subnet6)
	case spec.Gateway6 != "" && n.Gateway6.String() != spec.Gateway6:
		return differ("IPv6 gateway", n.Gateway6, spec.Gateway6)
	case spec.MTU != 0 && n.MTU != spec.MTU:
		return differ("MTU", n.MTU, spec.MTU)
	case n.Internal != spec.Internal:
		return differ("internal", n.Internal, spec.Internal)
	case !spec.Internal && spec.Masquerade != nil && n.Masquerade != *spec.Masquerade:
		return differ("masquerade", n.Masquerade, *spec.Masquerade)
	case !sameNonMasquerade(n.NonMasquerade, spec.NonMasquerade):
		return differ("non-masquerade ranges", n.NonMasquerade, spec.NonMasquerade)
	case spec.Driver != "" && n.Driver != spec.Driver:
		return differ("driver", n.Driver, spec.Driver)
	case spec.Parent != "" && n.Parent != spec.Parent:
		return differ("parent", n.Parent, spec.Parent)
	case spec.ICC != nil && n.NoICC == *spec.ICC:
		return differ("icc", !n.NoICC, *spec.ICC)
	}
	return nil
}

// Network returns one network.
func (m *Manager) Network(ref string) (*Network, error) {
	var out *Network
	err := m.view(func(tx *store.Tx) error {
		n, err := tx.Network(ref)
		if err != nil {
			return notFound("network", ref, err)
		}
		out = networkView(n)
		return nil
	})
	return out, err
}

// Networks lists every network, ordered by name.
func (m *Manager) Networks() ([]*Network, error) {
	var out []*Network
	err := m.view(func(tx *store.Tx) error {
		networks, err := tx.Networks()
		for _, n := range networks {
			out = append(out, networkView(n))
		}
		return err
	})
	return out, err
}

func notFound(kind, name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return tagged(ErrNotFound, "no %s called %s", kind, name)
	}
	return err
}
