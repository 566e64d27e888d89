package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// An "ipam" section hands addressing to the IPAM plugin it names, as the reference
// bridge plugin does: the plugin (host-local, with a node's pod CIDR in ranges or in
// the ipRanges capability) is found on CNI_PATH and given the same configuration
// ctnet was given, runtimeConfig included, so it reads its section and capabilities
// itself. ctnet then makes the network around the addresses it gave (its subnets and
// gateways, unless the configuration names them) and gives the container those
// addresses: one IPv4 address, and on a network with "ipv6" one IPv6 address when
// the plugin's ranges include an IPv6 range (else ctnet's own IPAM picks it). DEL,
// CHECK, GC and STATUS are passed on to it too.

// ipamLease is the addresses the IPAM plugin gave a new attachment.
type ipamLease struct {
	addr, addr6       netip.Prefix // addr6 invalid when the plugin gave none to use
	gateway, gateway6 netip.Addr   // invalid when the plugin named none
}

// delegatesIPAM says whether the configuration has an IPAM plugin give addresses.
func (c *netConf) delegatesIPAM() bool { return c.IPAM.Type != "" }

// ipamAdd asks the IPAM plugin for an address. A result ctnet cannot use is given
// back and refused, saying what to change in the ipam section.
func ipamAdd(conf *netConf, stdin []byte) (*ipamLease, error) {
	r, err := invoke.DelegateAdd(context.Background(), conf.IPAM.Type, stdin, nil)
	if err != nil {
		return nil, err
	}
	lease, err := leaseFrom(conf, r)
	if err != nil {
		return nil, withIPAMError(err, ipamDel(conf, stdin))
	}
	return lease, nil
}

// leaseFrom takes the one IPv4 address of the IPAM plugin's result, and on a
// network with "ipv6" its one IPv6 address if it gave one. Without "ipv6" IPv6
// addresses are left unused (the plugin frees them with DEL), as before ctnet had
// IPv6: a network's families are its configuration's.
func leaseFrom(conf *netConf, r types.Result) (*ipamLease, error) {
	plugin := conf.IPAM.Type
	refuse := func(format string, args ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("IPAM plugin %s ", plugin)+fmt.Sprintf(format, args...), "")
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return nil, refuse("gave a result ctnet cannot read: %v", err)
	}
	var v4, v6 []*types100.IPConfig
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() != nil {
			v4 = append(v4, ipc)
		} else if conf.IPv6 {
			v6 = append(v6, ipc)
		}
	}
	switch {
	case len(v4) == 0:
		return nil, refuse(`gave no IPv4 address: its ranges must include an IPv4 range, e.g. [[{"subnet": "10.244.1.0/24"}]]`)
	case len(v4) > 1:
		return nil, refuse("gave %d IPv4 addresses: a container has one per network, so its ranges, with those of the ipRanges capability, must be a single IPv4 range set", len(v4))
	case len(v6) > 1:
		return nil, refuse("gave %d IPv6 addresses: a container has one per network, so its ranges, with those of the ipRanges capability, must be at most one IPv6 range set", len(v6))
	}
	lease := &ipamLease{}
	lease.addr, lease.gateway = addressOf(v4[0])
	if len(v6) == 1 {
		lease.addr6, lease.gateway6 = addressOf(v6[0])
	}
	for _, route := range res.Routes {
		if ones, _ := route.Dst.Mask.Size(); ones != 0 && (route.Dst.IP.To4() != nil || conf.IPv6) {
			return nil, refuse("gave the route to %s: ctnet gives a container only its default routes, so ipam's routes must be 0.0.0.0/0, ::/0 or none", &route.Dst)
		}
	}
	families := []struct {
		addr             netip.Prefix
		gateway          netip.Addr
		subnet, confGW   string
		subnetKey, gwKey string
	}{
		{lease.addr, lease.gateway, conf.Subnet, conf.Gateway, "subnet", "gateway"},
		{lease.addr6, lease.gateway6, conf.Subnet6, conf.Gateway6, "subnet6", "gateway6"},
	}
	for _, f := range families {
		if !f.addr.IsValid() {
			continue
		}
		if subnet, err := netip.ParsePrefix(f.subnet); err == nil && !subnet.Contains(f.addr.Addr()) {
			return nil, refuse("gave %s, outside %s %s: its ranges must be within %s, or leave %s out to use the range's", f.addr, f.subnetKey, subnet, f.subnetKey, f.subnetKey)
		}
		if gw, err := netip.ParseAddr(f.confGW); err == nil && f.gateway.IsValid() && gw != f.gateway {
			return nil, refuse("gave gateway %s, the configuration's %s is %s: use the same gateway in both, or leave %s out", f.gateway, f.gwKey, gw, f.gwKey)
		}
	}
	return lease, nil
}

// addressOf is an IPAM result's address and gateway (invalid when it names none).
func addressOf(ipc *types100.IPConfig) (netip.Prefix, netip.Addr) {
	ip, _ := netip.AddrFromSlice(ipc.Address.IP)
	ones, _ := ipc.Address.Mask.Size()
	gw, _ := netip.AddrFromSlice(ipc.Gateway)
	return netip.PrefixFrom(ip.Unmap(), ones), gw.Unmap()
}

// fillNetwork makes the network around the IPAM plugin's ranges: the subnets and
// the gateways the configuration leaves to choose are the lease's.
func (l *ipamLease) fillNetwork(conf *netConf) {
	if conf.Subnet == "" {
		conf.Subnet = l.addr.Masked().String()
	}
	if conf.Gateway == "" && l.gateway.IsValid() {
		conf.Gateway = l.gateway.String()
	}
	if !l.addr6.IsValid() {
		return
	}
	if conf.Subnet6 == "" {
		conf.Subnet6 = l.addr6.Masked().String()
	}
	if conf.Gateway6 == "" && l.gateway6.IsValid() {
		conf.Gateway6 = l.gateway6.String()
	}
}

// ipamDel gives the container's address back to the IPAM plugin; a plugin that holds
// none for it succeeds, as the spec asks of DEL.
func ipamDel(conf *netConf, stdin []byte) error {
	if !conf.delegatesIPAM() {
		return nil
	}
	return invoke.DelegateDel(context.Background(), conf.IPAM.Type, stdin, nil)
}

// ipamCheck asks the IPAM plugin whether it still holds what it gave (host-local:
// the reservation for this container and interface).
func ipamCheck(conf *netConf, stdin []byte) error {
	if !conf.delegatesIPAM() {
		return nil
	}
	return invoke.DelegateCheck(context.Background(), conf.IPAM.Type, stdin, nil)
}

// ipamGC passes GC on: the IPAM plugin frees what it holds for attachments the
// runtime no longer lists (cni.dev/valid-attachments, in the same configuration).
func ipamGC(conf *netConf, stdin []byte) error {
	if !conf.delegatesIPAM() {
		return nil
	}
	return invoke.DelegateGC(context.Background(), conf.IPAM.Type, stdin, nil)
}

// ipamStatus passes STATUS on: ADD cannot work while the IPAM plugin cannot give
// addresses, or cannot be run.
func ipamStatus(conf *netConf, stdin []byte) error {
	if !conf.delegatesIPAM() {
		return nil
	}
	err := invoke.DelegateStatus(context.Background(), conf.IPAM.Type, stdin, nil)
	var cniErr *types.Error
	if err != nil && !errors.As(err, &cniErr) {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("IPAM plugin %s cannot be run", conf.IPAM.Type), err.Error())
	}
	return err
}

// withIPAMError is err followed by the IPAM plugin's error, both in what the runtime
// reads. errors.Join would not do: skel reports only the first CNI error in the
// chain, which would be the IPAM plugin's when ctnet's is a plain error.
func withIPAMError(err, ipamErr error) error {
	switch {
	case err == nil:
		return ipamErr
	case ipamErr == nil:
		return err
	}
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		return types.NewError(cniErr.Code, cniErr.Msg, strings.TrimSpace(cniErr.Details+" IPAM plugin: "+ipamErr.Error()))
	}
	return fmt.Errorf("%v; IPAM plugin: %v", err, ipamErr)
}
