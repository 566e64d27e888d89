package main

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/network"
)

// verify holds an attachment against the kernel as CHECK asks: what the result
// promised (promised: the runtime's prevResult) is still there. Of the result it
// reads only ctnet's part: the container's interface with its MAC and addresses
// (of each family the network has), the routes through the network's gateway, and the host veth, which
// must be up and a port of the network's bridge. Interfaces and routes another
// plugin of the chain added are that plugin's to check.
func verify(m *network.Manager, containerID string, c *network.Container, n *network.Network, att *network.Attachment, promised *types100.Result) error {
	info, err := m.InspectContainer(c.Name)
	if err != nil {
		return err
	}
	if info.Stack == nil {
		return fmt.Errorf("container %s: its namespace cannot be read", containerID)
	}
	i := slices.IndexFunc(info.Stack.Links, func(l link.LinkInfo) bool { return l.Name == att.IfName })
	if i < 0 {
		return fmt.Errorf("container %s: interface %s is missing from its namespace", containerID, att.IfName)
	}
	inPod := info.Stack.Links[i]

	wantMAC, wantHostMAC := att.MAC, ""
	var addrs []string
	for _, a := range []netip.Prefix{netip.PrefixFrom(att.IP, att.PrefixLen), netip.PrefixFrom(att.IP6, att.PrefixLen6)} {
		if a.IsValid() {
			addrs = append(addrs, a.String())
		}
	}
	for index, iface := range promised.Interfaces {
		switch {
		case iface.Name == att.IfName && iface.Sandbox != "":
			if iface.Mac != "" {
				wantMAC = iface.Mac
			}
			var promisedAddrs []string
			for _, ipc := range promised.IPs {
				if ipc.Interface != nil && *ipc.Interface == index && onNetwork(n, addrOf(ipc.Address.IP)) {
					promisedAddrs = append(promisedAddrs, ipc.Address.String())
				}
			}
			if len(promisedAddrs) > 0 {
				addrs = promisedAddrs
			}
		case iface.Name == att.HostVeth && iface.Sandbox == "":
			wantHostMAC = iface.Mac
		}
	}
	if !strings.EqualFold(inPod.MAC, wantMAC) {
		return fmt.Errorf("interface %s of container %s has the MAC %s, not its %s", att.IfName, containerID, inPod.MAC, wantMAC)
	}
	for _, want := range addrs {
		if !slices.Contains(inPod.Addresses, want) {
			return fmt.Errorf("interface %s of container %s lacks its address %s", att.IfName, containerID, want)
		}
	}
	for _, r := range promised.Routes {
		gateway := att.Gateway
		if r.Dst.IP.To4() == nil {
			gateway = att.Gateway6
		}
		if !gateway.IsValid() || (r.GW != nil && !onNetwork(n, addrOf(r.GW))) {
			continue
		}
		dst, gw := r.Dst.String(), gateway.String()
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			dst = "default"
		}
		if r.GW != nil {
			gw = r.GW.String()
		}
		if !slices.ContainsFunc(info.Stack.Routes, func(k link.RouteInfo) bool {
			return k.Destination == dst && k.Gateway == gw && k.Device == att.IfName
		}) {
			what := "route to " + dst
			if dst == "default" {
				what = "default route"
			}
			return fmt.Errorf("container %s lacks its %s via %s on %s", containerID, what, gw, att.IfName)
		}
	}

	host, err := m.HostLink(att.HostVeth)
	switch {
	case err != nil:
		return fmt.Errorf("container %s: its host interface %s: %w", containerID, att.HostVeth, err)
	case host.State == "DOWN":
		return fmt.Errorf("host interface %s of container %s is down", att.HostVeth, containerID)
	case host.Master != n.Bridge:
		master := host.Master
		if master == "" {
			master = "none"
		}
		return fmt.Errorf("host interface %s of container %s is not a port of bridge %s (its master: %s)", att.HostVeth, containerID, n.Bridge, master)
	case wantHostMAC != "" && !strings.EqualFold(host.MAC, wantHostMAC):
		return fmt.Errorf("host interface %s of container %s has the MAC %s, not its %s", att.HostVeth, containerID, host.MAC, wantHostMAC)
	}
	return nil
}

// addrOf is ip as a netip.Addr, an IPv4 one unmapped.
func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// onNetwork reports whether a is in one of n's subnets: ctnet's part of a result.
func onNetwork(n *network.Network, a netip.Addr) bool {
	return n.Subnet.IsValid() && n.Subnet.Contains(a) || n.Subnet6.IsValid() && n.Subnet6.Contains(a)
}
