package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/ctnet/ctnet/network"
)

// ipv6Result is ctnet on a dual-stack network next to the same on an IPv4 network,
// measured in one run: setup and teardown per container, and the data path over
// each family.
type ipv6Result struct {
	Setup    []setupResult `json:"setup"`
	DataPath []pathResult  `json:"datapath"`
}

// ipv6SetupTools are ctnet's CLI tools, each on an IPv4 network and next to it on a
// dual-stack one.
func ipv6SetupTools(cfg config) []setupTool {
	return selectTools(cfg, []setupTool{ctnetAttachTool{}, ctnetAttachTool{ipv6: true}, ctnetRunTool{}, ctnetRunTool{ipv6: true}})
}

func runIPv6Section(ctx context.Context, env *benchEnv, res *results) error {
	if err := measureSetups(ctx, env, res, ipv6SetupTools, &res.IPv6.Setup); err != nil {
		return err
	}
	return measureIPv6DataPath(ctx, env, res)
}

// Names of the IPv6 section's data paths.
const (
	pathC2CIPv4Net = "container → container, IPv4 network"
	pathC2CDual4   = "container → container over IPv4, dual-stack network"
	pathC2CDual6   = "container → container over IPv6, dual-stack network"
	pathNAT44      = "container → wan (NAT44), IPv4 network"
	pathNAT44Dual  = "container → wan (NAT44), dual-stack network"
	pathNAT66      = "container → wan (NAT66), dual-stack network"
)

// measureIPv6DataPath measures container↔container on one bridge and container→wan
// through masquerade on an IPv4 network, and on a dual-stack network over both
// families; every path is compared with its IPv4 network's.
func measureIPv6DataPath(ctx context.Context, env *benchEnv, res *results) (err error) {
	mark := env.clean.Mark()
	defer func() { err = errors.Join(err, env.clean.UnwindTo(mark)) }()
	l, err := newLab(ctx, env.clean)
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp(env.tmp, "ipv6-")
	if err != nil {
		return err
	}
	env.clean.Push("ipv6 data-path directory", func() error { return os.RemoveAll(root) })
	if err := l.addContainerNamespaces(ctx, 4); err != nil {
		return err
	}
	m, err := network.New(network.Options{Root: root, HostNetNS: l.hostPath, NoFastPath: noFastPath()})
	if err != nil {
		return err
	}
	env.clean.Push("ctnet manager", m.Close)
	for _, spec := range []network.NetworkSpec{
		{Name: ctnetNetwork, Subnet: ctnetPrefix + ".0.0/24"},
		{Name: "dual", Subnet: "10.93.0.0/24", IPv6: true, Subnet6: "fd63:746e:7493::/64"},
	} {
		if _, err := m.CreateNetwork(context.Background(), spec); err != nil {
			return err
		}
	}
	threads := map[int]*nsThread{}
	addrs := map[int]network.Attachment{}
	for i, spec := range map[int]network.ContainerSpec{
		1: {Name: "client", Network: network.OnNetwork(ctnetNetwork)},
		2: {Name: "server", Network: network.OnNetwork(ctnetNetwork)},
		3: {Name: "client-dual", Network: network.OnNetwork("dual")},
		4: {Name: "server-dual", Network: network.OnNetwork("dual")},
	} {
		spec.NetNS = l.containerNSPath(i)
		c, err := m.Create(context.Background(), spec)
		if err != nil {
			return fmt.Errorf("create container %s: %w", spec.Name, err)
		}
		env.clean.Push("container "+spec.Name, func() error { return m.Remove(context.Background(), spec.Name, false) })
		addrs[i] = c.Attachments[0]
		if threads[i], err = newNSThread(spec.NetNS); err != nil {
			return err
		}
		env.clean.Push("container thread", func() error { threads[i].close(); return nil })
	}
	// "::" serves both families (iperf3 and Go leave IPV6_V6ONLY off for it).
	for t, bind := range map[*nsThread]string{threads[2]: "0.0.0.0", threads[4]: "::", l.wan: "::"} {
		if err := serveTargets(env, t, bind); err != nil {
			return err
		}
	}
	server4, server6 := addrs[2].IP.String(), addrs[4].IP6.String()
	for _, host := range []string{server4, addrs[4].IP.String(), server6, wanIP, wanIP6} {
		if err := waitListening(ctx, l.host, net.JoinHostPort(host, strconv.Itoa(iperfPort))); err != nil {
			return err
		}
	}
	res.IPv6.DataPath = measurePaths(ctx, env, []pathProbe{
		{path: pathC2CIPv4Net, tool: "ctnet", from: threads[1], host: server4, iperf: iperfPort, pingPong: pingPongPort},
		{path: pathC2CDual4, tool: "ctnet", from: threads[3], host: addrs[4].IP.String(), iperf: iperfPort, pingPong: pingPongPort, reference: pathC2CIPv4Net},
		{path: pathC2CDual6, tool: "ctnet", from: threads[3], host: server6, iperf: iperfPort, pingPong: pingPongPort, reference: pathC2CIPv4Net},
		{path: pathNAT44, tool: "ctnet", from: threads[1], host: wanIP, iperf: iperfPort, pingPong: pingPongPort},
		{path: pathNAT44Dual, tool: "ctnet", from: threads[3], host: wanIP, iperf: iperfPort, pingPong: pingPongPort, reference: pathNAT44},
		{path: pathNAT66, tool: "ctnet", from: threads[3], host: wanIP6, iperf: iperfPort, pingPong: pingPongPort, reference: pathNAT44},
	})
	return nil
}
