// Package firewall programs ctnet's nftables tables from desired state, over netlink.
//
// ctnet owns two tables in a namespace and touches no other: `inet ctnet` (NAT for
// the way out, DNAT for published ports, isolation between networks) and
// `bridge ctnet` (anti-spoofing on container ports, which only a bridge-family hook
// sees for traffic between two containers of one bridge). Their rules are fixed; all
// per-network, per-container and per-port data lives in sets and maps, so the rules a
// packet traverses and the cost of one change do not grow with the number of
// containers, networks or ports. A change adds or removes elements in one batch;
// Rebuild replaces both tables atomically from the whole state.
package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/ctnet/ctnet/internal/published"
)

// TableName is the name of both of ctnet's tables.
const TableName = "ctnet"

// Network is one network's share of the firewall.
type Network struct {
	Bridge     string
	Subnet     netip.Prefix // invalid on an IPv6-only network
	Subnet6    netip.Prefix // invalid without IPv6
	Internal   bool         // no way out, no way in
	Masquerade bool         // traffic leaving by another interface is masqueraded
	NoICC      bool         // its containers cannot reach each other (Docker's enable_icc=false)
	// NonMasquerade are the destinations a masquerading network's traffic reaches with
	// its containers' own addresses (ip-masq-agent's nonMasqueradeCIDRs: the cluster's
	// pod range), and the sources that reach its containers by routing, as pods on
	// other nodes do. They must not overlap each other.
	NonMasquerade []netip.Prefix
}

// Endpoint is one container interface: the host end of its veth and the only source
// MAC and addresses it may send from: IP (IPv4), and on a network with IPv6, IP6
// and the link-local address its MAC gives (EUI-64).
type Endpoint struct {
	HostVeth string
	MAC      net.HardwareAddr
	IP       netip.Addr // invalid on an IPv6-only network
	IP6      netip.Addr // invalid without IPv6
	NoICC    bool       // on a network whose containers cannot reach each other (Docker's enable_icc=false)
}

// LinkLocal is the EUI-64 link-local address of an interface with this MAC, the
// one the kernel gives it (addr_gen_mode 0, which ctnet sets).
func LinkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	copy(a[8:], []byte{mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return netip.AddrFrom16(a)
}

// Port is one published port.
type Port = published.Port

// State is everything the tables hold.
type State struct {
	// Owner is the ctnet root that manages the tables (its state directory). Two roots
	// on one host namespace would share the tables and bridge names and each would
	// remove the other's objects as orphans, so the tables say whose they are.
	Owner     string
	Networks  []Network
	Endpoints []Endpoint
	Ports     []Port
}

// Change is a set of element additions and removals applied in one batch. Removals
// run first, so a change can move an element.
type Change struct {
	Add, Remove State
}

// Empty reports whether the change does nothing.
func (c Change) Empty() bool {
	return c.Add.empty() && c.Remove.empty()
}

func (s State) empty() bool {
	return len(s.Networks) == 0 && len(s.Endpoints) == 0 && len(s.Ports) == 0
}

// Sorted returns the state in a canonical order (for rendering and comparison).
func (s State) Sorted() State {
	out := State{
		Owner:     s.Owner,
		Networks:  slices.Clone(s.Networks),
		Endpoints: slices.Clone(s.Endpoints),
		Ports:     slices.Clone(s.Ports),
	}
	slices.SortFunc(out.Networks, func(a, b Network) int { return strings.Compare(a.Bridge, b.Bridge) })
	slices.SortFunc(out.Endpoints, func(a, b Endpoint) int { return strings.Compare(a.HostVeth, b.HostVeth) })
	slices.SortFunc(out.Ports, func(a, b Port) int {
		if c := a.HostIP.Compare(b.HostIP); c != 0 {
			return c
		}
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		return int(a.HostPort) - int(b.HostPort)
	})
	return out
}

// ProtoNumber is the IP protocol number of a published port's protocol.
func ProtoNumber(proto string) (byte, error) {
	switch proto {
	case "tcp":
		return 6, nil
	case "udp":
		return 17, nil
	case "sctp":
		return 132, nil
	}
	return 0, fmt.Errorf("unknown protocol %q: use tcp, udp or sctp", proto)
}
