// Package addrs lays out a user-mode network's addresses in its subnet, as
// slirp4netns does: the gateway at .2, the DNS forwarder at .3, the container at
// .100. It is apart from package usernet so that what only names the addresses
// (ctnet's records, a container's resolv.conf) does not link the user-mode stack.
package addrs

import (
	"fmt"
	"net/netip"
)

// DefaultSubnet is slirp4netns' subnet, 10.0.2.0/24.
func DefaultSubnet() netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 2, 0}), 24) }

// Addrs are the addresses of a user-mode network.
type Addrs struct {
	Subnet              netip.Prefix
	Gateway, DNS, Guest netip.Addr
}

// Of lays out the addresses of subnet (its host bits cleared), which must be IPv4
// and hold .100.
func Of(subnet netip.Prefix) (Addrs, error) {
	subnet = subnet.Masked()
	if !subnet.Addr().Is4() || subnet.Bits() > 25 {
		return Addrs{}, fmt.Errorf("subnet %s must be IPv4 with room for .100 (at most /25)", subnet)
	}
	nth := func(n byte) netip.Addr {
		a := subnet.Addr().As4()
		a[3] += n
		return netip.AddrFrom4(a)
	}
	return Addrs{Subnet: subnet, Gateway: nth(2), DNS: nth(3), Guest: nth(100)}, nil
}

// IPv6 is the IPv6 side of every user-mode network, slirp4netns' with
// --enable-ipv6: fd00::/64 with the gateway at fd00::2, the DNS forwarder at
// fd00::3 and the container at fd00::100.
func IPv6() Addrs {
	addr := func(suffix uint16) netip.Addr {
		return netip.AddrFrom16([16]byte{0: 0xfd, 14: byte(suffix >> 8), 15: byte(suffix)})
	}
	return Addrs{Subnet: netip.PrefixFrom(addr(0), 64), Gateway: addr(0x2), DNS: addr(0x3), Guest: addr(0x100)}
}
