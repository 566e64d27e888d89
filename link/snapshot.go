package link

import (
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/netns"
)

// Stack is a namespace's network stack as inspect-net-stack.sh shows it: links with
// their addresses, routes and neighbours.
type Stack struct {
	Links      []LinkInfo  `json:"links"`
	Routes     []RouteInfo `json:"routes"`
	Neighbours []NeighInfo `json:"neighbours"`
}

// LinkInfo is one interface.
type LinkInfo struct {
	Index     int      `json:"index"`
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	State     string   `json:"state"`
	MTU       int      `json:"mtu"`
	MAC       string   `json:"mac,omitempty"`
	Master    string   `json:"master,omitempty"`
	Addresses []string `json:"addresses"`
}

// RouteInfo is one route of the main table.
type RouteInfo struct {
	Destination string `json:"destination"`
	Gateway     string `json:"gateway,omitempty"`
	Device      string `json:"device"`
	Source      string `json:"source,omitempty"`
	Scope       string `json:"scope"`
}

// NeighInfo is one neighbour (ARP) entry.
type NeighInfo struct {
	Address string `json:"address"`
	MAC     string `json:"mac,omitempty"`
	Device  string `json:"device"`
	State   string `json:"state"`
}

// Snapshot reads the namespace's network stack, both families.
func Snapshot(ns *netns.NS) (*Stack, error) {
	h, links, names, err := linksByIndex(ns)
	if err != nil {
		return nil, err
	}
	st := &Stack{Links: []LinkInfo{}, Routes: []RouteInfo{}, Neighbours: []NeighInfo{}}
	for _, l := range links {
		a := l.Attrs()
		info := describe(l, names[a.MasterIndex])
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_ALL) })
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			info.Addresses = append(info.Addresses, ad.IPNet.String())
		}
		st.Links = append(st.Links, info)
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		ri := RouteInfo{Destination: "default", Device: names[r.LinkIndex], Scope: r.Scope.String()}
		if r.Dst != nil && !isZeroMask(r.Dst.Mask) {
			ri.Destination = r.Dst.String()
		}
		if r.Gw != nil {
			ri.Gateway = r.Gw.String()
		}
		if r.Src != nil {
			ri.Source = r.Src.String()
		}
		st.Routes = append(st.Routes, ri)
	}
	neighs, err := retryDump(func() ([]netlink.Neigh, error) { return h.NeighList(0, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range neighs {
		if n.IP.IsMulticast() {
			continue // IPv6's NOARP entries for the groups it joined, not neighbours
		}
		st.Neighbours = append(st.Neighbours, NeighInfo{Address: n.IP.String(), MAC: n.HardwareAddr.String(),
			Device: names[n.LinkIndex], State: neighState(n.State)})
	}
	return st, nil
}

// describe is a link without its addresses; master is its master's name.
func describe(l netlink.Link, master string) LinkInfo {
	a := l.Attrs()
	info := LinkInfo{Index: a.Index, Name: a.Name, Type: l.Type(), State: strings.ToUpper(a.OperState.String()),
		MTU: a.MTU, MAC: a.HardwareAddr.String(), Master: master, Addresses: []string{}}
	if a.Flags&net.FlagUp == 0 {
		info.State = "DOWN"
	}
	return info
}

// Info describes one link of ns, as Snapshot does but without its addresses: what
// a check of a single link (its state, its master) needs, without dumping the
// namespace. A missing link is ErrNotFound.
func Info(ns *netns.NS, name string) (*LinkInfo, error) {
	l, err := ByName(ns, name)
	if err != nil {
		return nil, err
	}
	var master string
	if index := l.Attrs().MasterIndex; index != 0 {
		h, err := ns.Netlink()
		if err != nil {
			return nil, err
		}
		m, err := h.LinkByIndex(index)
		if err != nil {
			return nil, fmt.Errorf("read the master of %s: %w", name, err)
		}
		master = m.Attrs().Name
	}
	info := describe(l, master)
	return &info, nil
}

func neighState(s int) string {
	for _, st := range []struct {
		bit  int
		name string
	}{{unix.NUD_INCOMPLETE, "INCOMPLETE"}, {unix.NUD_REACHABLE, "REACHABLE"}, {unix.NUD_STALE, "STALE"},
		{unix.NUD_DELAY, "DELAY"}, {unix.NUD_PROBE, "PROBE"}, {unix.NUD_FAILED, "FAILED"},
		{unix.NUD_NOARP, "NOARP"}, {unix.NUD_PERMANENT, "PERMANENT"}} {
		if s&st.bit != 0 {
			return st.name
		}
	}
	return "NONE"
}
