package network

import (
	"net/netip"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
)

// ContainerInspect is a container with what the kernel holds for it. Its JSON is the
// container's, with the keys stack (omitted when absent) and firewall.
type ContainerInspect struct {
	*Container
	// Stack is the container's namespace as seen from inside (absent when the
	// container has exited or uses the host's namespace).
	Stack    *link.Stack      `json:"stack,omitempty"`
	Firewall []firewall.Entry `json:"firewall"`
}

// InspectContainer reads a container's record, its namespace's stack and its
// firewall entries.
func (m *Manager) InspectContainer(ref string) (*ContainerInspect, error) {
	c, err := m.container(ref)
	if err != nil {
		return nil, err
	}
	out := &ContainerInspect{Container: containerView(c), Firewall: []firewall.Entry{}}
	if c.State != store.StateExited && c.NetNS != "" {
		ns, err := netns.Open(c.NetNS)
		if err != nil {
			return nil, err
		}
		defer ns.Close()
		if out.Stack, err = link.Snapshot(ns); err != nil {
			return nil, err
		}
	}
	if c.State == store.StateExited || c.Mode != store.ModeBridge {
		return out, nil
	}
	var keys []string
	for _, a := range c.Attachments {
		if a.HostVeth == "" { // a macvlan interface has no firewall entries
			continue
		}
		keys = append(keys, a.HostVeth)
		for _, ip := range []netip.Addr{a.IP, a.IP6} {
			if ip.IsValid() {
				keys = append(keys, ip.String())
			}
		}
	}
	if len(keys) == 0 {
		return out, nil
	}
	out.Firewall, err = m.firewallEntries(keys)
	return out, err
}

// NetworkMember is one container on a network.
type NetworkMember struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	Interface string `json:"interface"`
	HostVeth  string `json:"host_veth"`
	IP        string `json:"ip"`
	IP6       string `json:"ip6,omitempty"`
	MAC       string `json:"mac"`
}

// NetworkInspect is a network with its members and firewall entries. Its JSON is the
// network's, with the keys containers and firewall.
type NetworkInspect struct {
	*Network
	Containers []NetworkMember  `json:"containers"`
	Firewall   []firewall.Entry `json:"firewall"`
}

// InspectNetwork reads a network's record, its running containers and its firewall
// entries.
func (m *Manager) InspectNetwork(ref string) (*NetworkInspect, error) {
	out := &NetworkInspect{Containers: []NetworkMember{}}
	err := m.view(func(tx *store.Tx) error {
		n, err := tx.Network(ref)
		if err != nil {
			return notFound("network", ref, err)
		}
		out.Network = networkView(n)
		leases, err := tx.Leases(n.ID)
		if err != nil {
			return err
		}
		seen := map[string]bool{} // a container on both families holds two leases
		for _, id := range leases {
			if seen[id] {
				continue
			}
			seen[id] = true
			c, err := tx.Container(id)
			if err != nil || m.stateOf(c) == store.StateExited {
				continue
			}
			for _, a := range c.Attachments {
				if a.NetworkID == n.ID {
					member := NetworkMember{Name: c.Name, ID: c.ID, Interface: a.IfName, HostVeth: a.HostVeth, MAC: a.MAC}
					if a.IP.IsValid() {
						member.IP = a.IP.String()
					}
					if a.IP6.IsValid() {
						member.IP6 = a.IP6.String()
					}
					out.Containers = append(out.Containers, member)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out.Driver == DriverMacvlan {
		out.Firewall = []firewall.Entry{}
		return out, nil
	}
	keys := []string{out.Bridge}
	for _, p := range []netip.Prefix{out.Subnet, out.Subnet6} {
		if p.IsValid() {
			keys = append(keys, p.Addr().String())
		}
	}
	out.Firewall, err = m.firewallEntries(keys)
	return out, err
}

// firewallEntries lists the kernel's ctnet elements that mention any of keys.
func (m *Manager) firewallEntries(keys []string) ([]firewall.Entry, error) {
	conn, err := m.host.NFT()
	if err != nil {
		return nil, err
	}
	all, err := firewall.List(conn)
	if err != nil {
		return nil, err
	}
	out := []firewall.Entry{}
	for _, e := range all {
		for _, k := range keys {
			if e.Mentions(k) {
				out = append(out, e)
				break
			}
		}
	}
	return out, nil
}
