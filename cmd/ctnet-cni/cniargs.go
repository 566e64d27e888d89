package main

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/ctnet/ctnet/network"
)

// requestedAddresses are the address of each family and the MAC address the runtime
// asks for, "" for ctnet's choice. CNI's conventions give two ways for each: the ips
// and mac capabilities, and CNI_ARGS IP= and MAC=, which Podman uses for a single
// --ip and for --mac-address. Both may come; they must then agree. An IPv6 address
// in CNI_ARGS is skipped: Podman sends --ip6 in the ips capability.
func requestedAddresses(conf *netConf, cniArgs string) (ip, ip6, mac string, err error) {
	if ip, ip6, err = conf.requestedIP(); err != nil {
		return "", "", "", err
	}
	argIP, argMAC := cniArg(cniArgs, "IP"), cniArg(cniArgs, "MAC")
	if argIP != "" {
		addr, perr := netip.ParseAddr(argIP)
		if perr != nil {
			return "", "", "", types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("bad address %q in CNI_ARGS IP: use an IPv4 address such as 10.88.0.5", argIP), "")
		}
		if addr.Is4() || addr.Is4In6() {
			if ip != "" && ip != addr.Unmap().String() {
				return "", "", "", types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("CNI_ARGS IP=%s and runtimeConfig.ips %s ask for different addresses: give one, or the same in both", argIP, ip), "")
			}
			ip = addr.Unmap().String()
		}
	}
	mac = conf.RuntimeConfig.MAC
	if argMAC != "" {
		hw, perr := net.ParseMAC(argMAC)
		if perr != nil {
			return "", "", "", types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("bad MAC address %q in CNI_ARGS MAC: use one such as 02:42:0a:58:00:05", argMAC), "")
		}
		if mac != "" {
			if capHW, err := net.ParseMAC(mac); err != nil || !slices.Equal(hw, capHW) {
				return "", "", "", types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("CNI_ARGS MAC=%s and runtimeConfig.mac %s ask for different addresses: give one, or the same in both", argMAC, mac), "")
			}
		}
		mac = argMAC
	}
	return ip, ip6, mac, nil
}

// cniArg is the value of key in CNI_ARGS (K1=V1;K2=V2), "" when absent. Keys that are
// not ctnet's are left alone whether or not IgnoreUnknown is given: runtimes pass
// their own (K8S_POD_NAME and others) to every plugin of a chain.
func cniArg(cniArgs, key string) string {
	for _, pair := range strings.Split(cniArgs, ";") {
		if k, v, ok := strings.Cut(pair, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// publishes reports whether c already publishes exactly the ports specs ask for:
// what a runtime that gives every network the same mappings sends with a further
// network.
func publishes(c *network.Container, specs []network.PortSpec) bool {
	type mapping struct {
		hostIP                  netip.Addr
		hostPort, containerPort uint16
		proto                   string
	}
	key := func(hostIP netip.Addr, hostPort, containerPort uint16, proto string) mapping {
		if hostIP.IsValid() && hostIP.IsUnspecified() {
			hostIP = netip.Addr{}
		}
		return mapping{hostIP, hostPort, containerPort, proto}
	}
	published := map[mapping]bool{}
	for _, p := range c.Ports {
		published[key(p.HostIP, p.HostPort, p.ContainerPort, p.Proto)] = true
	}
	asked := map[mapping]bool{}
	for _, s := range specs {
		if s.HostPort == 0 {
			return false // a port to choose cannot be one already chosen
		}
		for i := range int(s.CPEnd-s.ContainerPort) + 1 {
			asked[key(s.HostIP, s.HostPort+uint16(i), s.ContainerPort+uint16(i), s.Proto)] = true
		}
	}
	if len(asked) != len(published) {
		return false
	}
	for m := range asked {
		if !published[m] {
			return false
		}
	}
	return true
}
