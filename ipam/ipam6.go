package ipam

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// DefaultPool6 is where a network's IPv6 subnet comes from when none is given: /64s
// of one unique-local /48 (fd63:746e:7400::/48, "ctnt" as the device group), so
// containers get stable addresses that never collide with the host's global ones.
var DefaultPool6 = Pool{Base: netip.MustParsePrefix("fd63:746e:7400::/48"), Size: 64}

// MaxPrefixLen6 is the smallest IPv6 subnet a network may have: room for the
// subnet-router anycast address, a gateway and a container.
const MaxPrefixLen6 = 126

// ParseSubnet6 parses an IPv6 CIDR that names a network (host bits zero) of unicast
// addresses large enough for a gateway and one container.
func ParseSubnet6(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: want IPv6 CIDR notation like fd00:1::/64", s)
	}
	a := p.Addr()
	if a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsLoopback() || p.Bits() < 16 {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: not a unicast IPv6 subnet a network can have (link-local, multicast and loopback are taken; use /16 or longer)", s)
	}
	if p.Bits() > MaxPrefixLen6 {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: too small, use a prefix of /%d or shorter", s, MaxPrefixLen6)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: host bits are set, did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// ParseAddr6 parses an IPv6 address (not an IPv4-mapped one).
func ParseAddr6(what, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("invalid %s %q: want an IPv6 address like fd00:1::10", what, s)
	}
	return a, nil
}

// CheckAddr6 says why a is not assignable in the IPv6 subnet p, or nil. The
// subnet-router anycast address (the subnet's first) belongs to its routers.
func CheckAddr6(what string, p netip.Prefix, a netip.Addr) error {
	if !p.Contains(a) {
		return fmt.Errorf("%s %s is outside the subnet %s", what, a, p)
	}
	if a == p.Masked().Addr() {
		return fmt.Errorf("%s %s is the subnet-router anycast address of %s", what, a, p)
	}
	return nil
}

// Next6 returns the first free address of an IPv6 subnet after cursor, wrapping
// around once, as Next does for IPv4. A /64 is never scanned whole: the addresses in
// use are few, and the scan stops at the first free one after them.
func Next6(p netip.Prefix, cursor netip.Addr, used func(netip.Addr) bool) (netip.Addr, error) {
	if !p.IsValid() || !p.Addr().Is6() || p.Bits() > MaxPrefixLen6 {
		return netip.Addr{}, fmt.Errorf("allocate address in %s: not an IPv6 subnet with room for an address", p)
	}
	first, last := FirstHost(p), LastAddr(p)
	if !cursor.IsValid() || !p.Contains(cursor) || cursor == last {
		cursor = p.Masked().Addr()
	}
	for a := cursor.Next(); a.IsValid() && p.Contains(a); a = a.Next() {
		if !used(a) {
			return a, nil
		}
	}
	for a := first; a.Compare(cursor) <= 0; a = a.Next() {
		if !used(a) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("allocate address in %s: %w", p, ErrPoolExhausted)
}

// LastAddr is the last address of a prefix of either family.
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// PickSubnet6 returns the first subnet of an IPv6 pool that overlaps none of taken.
func PickSubnet6(pool Pool, taken []netip.Prefix) (netip.Prefix, error) {
	if !pool.Base.Addr().Is6() || pool.Size < pool.Base.Bits() || pool.Size > 64 || pool.Size-pool.Base.Bits() > 24 {
		return netip.Prefix{}, fmt.Errorf("pick an IPv6 subnet: bad pool %s with size /%d: want an IPv6 base and a size of at most /64, with at most 2^24 subnets", pool.Base, pool.Size)
	}
	base := pool.Base.Masked().Addr().As16()
	high := binary.BigEndian.Uint64(base[:8])
	count := uint64(1) << (pool.Size - pool.Base.Bits())
	for i := uint64(0); i < count; i++ {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], high+i<<(64-pool.Size))
		cand := netip.PrefixFrom(netip.AddrFrom16(b), pool.Size)
		if !overlapsAny(cand, taken) {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("pick an IPv6 subnet: every subnet of %s is in use or overlaps a host route (%w); give one with --subnet", pool.Base, ErrPoolExhausted)
}
