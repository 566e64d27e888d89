package network

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/store"
)

// Topology is what ctnet has built on the host, from the store and the kernel: the
// uplinks (the host's default routes), each network with its bridge and members,
// and the containers without an interface of their own on a ctnet network.
type Topology struct {
	Uplinks  []Uplink          `json:"uplinks"`
	Networks []TopologyNetwork `json:"networks"`
	Others   []TopologyOther   `json:"others"`
}

// Uplink is an interface a default route of the host leaves by.
type Uplink struct {
	Interface string   `json:"interface"`
	Addresses []string `json:"addresses"`
	Gateway   string   `json:"gateway,omitempty"`
}

// TopologyNetwork is a network with its bridge's state in the kernel and its
// members.
type TopologyNetwork struct {
	*Network
	// BridgeState is the bridge's operational state, "missing" when the kernel has
	// no such link (`ctnet gc` recreates it).
	BridgeState string           `json:"bridge_state"`
	Members     []TopologyMember `json:"members"`
}

// TopologyMember is one container's interface on a network: the veth pair's two
// ends and the ports published to its address.
type TopologyMember struct {
	Container     string     `json:"container"`
	Interface     string     `json:"interface"`
	IP            netip.Addr `json:"ip"`
	PrefixLen     int        `json:"prefix_len"`
	MAC           string     `json:"mac"`
	HostVeth      string     `json:"host_veth"`
	HostVethState string     `json:"host_veth_state"`
	Ports         []Port     `json:"ports"`
}

// TopologyOther is a running container with no interface of its own on a ctnet
// network (host, none, container:NAME, a user-mode network).
type TopologyOther struct {
	Container string `json:"container"`
	Mode      string `json:"mode"`
}

// Topology reads the store's networks and running containers and the host's links
// and routes.
func (m *Manager) Topology() (*Topology, error) {
	out := &Topology{Uplinks: []Uplink{}, Networks: []TopologyNetwork{}, Others: []TopologyOther{}}
	var networks []*store.Network
	var containers []*store.Container
	err := m.view(func(tx *store.Tx) (err error) {
		if networks, err = tx.Networks(); err != nil {
			return err
		}
		containers, err = tx.Containers()
		return err
	})
	if err != nil {
		return nil, err
	}
	links := map[string]link.LinkInfo{}
	if !m.rootless {
		stack, err := link.Snapshot(m.host)
		if err != nil {
			return nil, err
		}
		for _, l := range stack.Links {
			links[l.Name] = l
		}
		for _, r := range stack.Routes {
			if r.Destination != "default" {
				continue
			}
			u := Uplink{Interface: r.Device, Addresses: []string{}, Gateway: r.Gateway}
			for _, a := range links[r.Device].Addresses {
				if p, err := netip.ParsePrefix(a); err == nil && !p.Addr().IsLinkLocalUnicast() {
					u.Addresses = append(u.Addresses, a)
				}
			}
			out.Uplinks = append(out.Uplinks, u)
		}
	}
	state := func(name string) string {
		if l, ok := links[name]; ok {
			return strings.ToLower(l.State)
		}
		return "missing"
	}
	slices.SortFunc(networks, func(a, b *store.Network) int { return strings.Compare(a.Name, b.Name) })
	byID := map[string]int{}
	for _, n := range networks {
		byID[n.ID] = len(out.Networks)
		out.Networks = append(out.Networks, TopologyNetwork{Network: networkView(n), BridgeState: state(n.Bridge), Members: []TopologyMember{}})
	}
	slices.SortFunc(containers, func(a, b *store.Container) int { return strings.Compare(a.Name, b.Name) })
	for _, sc := range containers {
		if m.stateOf(sc) == store.StateExited {
			continue
		}
		c := containerView(sc)
		if len(c.Attachments) == 0 {
			out.Others = append(out.Others, TopologyOther{Container: c.Name, Mode: string(c.Mode)})
			continue
		}
		for _, a := range c.Attachments {
			i, ok := byID[a.NetworkID]
			if !ok {
				continue
			}
			mem := TopologyMember{Container: c.Name, Interface: a.IfName, IP: a.IP, PrefixLen: a.PrefixLen, MAC: a.MAC,
				HostVeth: a.HostVeth, HostVethState: state(a.HostVeth), Ports: []Port{}}
			for _, p := range c.Ports {
				if p.ContainerIP == a.IP {
					mem.Ports = append(mem.Ports, p)
				}
			}
			out.Networks[i].Members = append(out.Networks[i].Members, mem)
		}
	}
	return out, nil
}
