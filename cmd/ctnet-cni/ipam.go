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
// itself. ctnet then makes the network around the address it gave (its subnet and
// gateway, unless the configuration names them) and gives the container that
// address. DEL, CHECK, GC and STATUS are passed on to it too.

// ipamLease is the address the IPAM plugin gave a new attachment.
type ipamLease struct {
	addr    netip.Prefix
	gateway netip.Addr // invalid when the plugin named none
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

// leaseFrom takes the one IPv4 address of the IPAM plugin's result; IPv6 addresses
// are left unused, as ctnet's networks are IPv4 (the plugin frees them with DEL).
func leaseFrom(conf *netConf, r types.Result) (*ipamLease, error) {
	plugin := conf.IPAM.Type
	refuse := func(format string, args ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("IPAM plugin %s ", plugin)+fmt.Sprintf(format, args...), "")
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return nil, refuse("gave a result ctnet cannot read: %v", err)
	}
	var v4 []*types100.IPConfig
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() != nil {
			v4 = append(v4, ipc)
		}
	}
	switch {
	case len(v4) == 0:
		return nil, refuse(`gave no IPv4 address: its ranges must include an IPv4 range, e.g. [[{"subnet": "10.244.1.0/24"}]]`)
	case len(v4) > 1:
		return nil, refuse("gave %d IPv4 addresses: a container has one per network, so its ranges, with those of the ipRanges capability, must be a single IPv4 range set", len(v4))
	}
	ip, _ := netip.AddrFromSlice(v4[0].Address.IP.To4())
	ones, _ := v4[0].Address.Mask.Size()
	lease := &ipamLease{addr: netip.PrefixFrom(ip, ones)}
	if gw, ok := netip.AddrFromSlice(v4[0].Gateway.To4()); ok {
		lease.gateway = gw
	}
	for _, route := range res.Routes {
		if ones, _ := route.Dst.Mask.Size(); route.Dst.IP.To4() != nil && ones != 0 {
			return nil, refuse("gave the route to %s: ctnet gives a container only its default route, so ipam's routes must be 0.0.0.0/0 or none", &route.Dst)
		}
	}
	if subnet, err := netip.ParsePrefix(conf.Subnet); err == nil && !subnet.Contains(ip) {
		return nil, refuse("gave %s, outside subnet %s: its ranges must be within subnet, or leave subnet out to use the range's", lease.addr, subnet)
	}
	if gw, err := netip.ParseAddr(conf.Gateway); err == nil && lease.gateway.IsValid() && gw != lease.gateway {
		return nil, refuse("gave gateway %s, the configuration's gateway is %s: use the same gateway in both, or leave gateway out", lease.gateway, gw)
	}
	return lease, nil
}

// fillNetwork makes the network around the IPAM plugin's range: the subnet and the
// gateway the configuration leaves to choose are the lease's.
func (l *ipamLease) fillNetwork(conf *netConf) {
	if conf.Subnet == "" {
		conf.Subnet = l.addr.Masked().String()
	}
	if conf.Gateway == "" && l.gateway.IsValid() {
		conf.Gateway = l.gateway.String()
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
