// Package ipam allocates subnets and addresses. It is pure logic over netip values:
// what is taken is passed in, so the caller decides where that knowledge lives.
package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrPoolExhausted is returned when no subnet or address is left.
var ErrPoolExhausted = errors.New("pool exhausted")

// Pool is a range that subnets of Size bits are carved from.
type Pool struct {
	Base netip.Prefix
	Size int
}

// DefaultPools are Docker's default address pools: 172.17–31.0.0/16, then
// 192.168.0.0/16 in /20s.
var DefaultPools = []Pool{
	{Base: netip.MustParsePrefix("172.17.0.0/16"), Size: 16},
	{Base: netip.MustParsePrefix("172.18.0.0/15"), Size: 16},
	{Base: netip.MustParsePrefix("172.20.0.0/14"), Size: 16},
	{Base: netip.MustParsePrefix("172.24.0.0/13"), Size: 16},
	{Base: netip.MustParsePrefix("192.168.0.0/16"), Size: 20},
}

// MaxPrefixLen is the smallest subnet a network may have: room for a gateway and at
// least one container.
const MaxPrefixLen = 30

// ParseSubnet parses an IPv4 CIDR that names a network (host bits zero) large enough
// for a gateway and one container.
func ParseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: want CIDR notation like 172.30.0.0/16", s)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: only IPv4 subnets are supported, want CIDR notation like 172.30.0.0/16", s)
	}
	// The size comes first, so the correction offered for host bits is a subnet
	// that is accepted.
	if p.Bits() > MaxPrefixLen {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: too small, use a prefix of /%d or shorter", s, MaxPrefixLen)
	}
	if p.Bits() < 8 {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: too large, use a prefix of /8 or longer", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: host bits are set, did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// ParseAddr parses an IPv4 address.
func ParseAddr(what, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("invalid %s %q: want an IPv4 address like 172.30.0.10", what, s)
	}
	return a, nil
}

// FirstHost is the first usable address of a subnet, the default gateway.
func FirstHost(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// Broadcast is the last address of an IPv4 subnet, or the zero Addr if p is not one.
func Broadcast(p netip.Prefix) netip.Addr {
	if !isIPv4(p) {
		return netip.Addr{}
	}
	host := uint64(1)<<(32-p.Bits()) - 1
	return fromUint(uint32(toUint(p.Masked().Addr()) | host))
}

// IsHost reports whether a is a usable host address of p (not the network or
// broadcast address).
func IsHost(p netip.Prefix, a netip.Addr) bool {
	return isIPv4(p) && p.Contains(a) && a != p.Masked().Addr() && a != Broadcast(p)
}

// isIPv4 reports whether p is a valid IPv4 prefix (not an IPv4-mapped IPv6 one):
// the arithmetic here works on 32-bit addresses only.
func isIPv4(p netip.Prefix) bool { return p.IsValid() && p.Addr().Is4() }

// CheckAddr says why a is not assignable in p, or nil.
func CheckAddr(what string, p netip.Prefix, a netip.Addr) error {
	if !p.Contains(a) {
		return fmt.Errorf("%s %s is outside the subnet %s", what, a, p)
	}
	if !IsHost(p, a) {
		return fmt.Errorf("%s %s is the network or broadcast address of %s", what, a, p)
	}
	return nil
}

// Next returns the first free host address after cursor, wrapping around once, so
// released addresses are reused last (stale ARP entries age out first). An invalid
// cursor starts at the beginning.
func Next(p netip.Prefix, cursor netip.Addr, used func(netip.Addr) bool) (netip.Addr, error) {
	if !isIPv4(p) {
		return netip.Addr{}, fmt.Errorf("allocate address in %s: not an IPv4 subnet", p)
	}
	if p.Bits() > MaxPrefixLen {
		// A /31 or /32 has no host address; the loops below would step past
		// 255.255.255.255 to the zero Addr and return it.
		return netip.Addr{}, fmt.Errorf("allocate address in %s: %w", p, ErrPoolExhausted)
	}
	first, last := FirstHost(p), Broadcast(p).Prev()
	if !cursor.IsValid() || !p.Contains(cursor) || cursor.Compare(last) >= 0 {
		cursor = p.Masked().Addr()
	}
	for a := cursor.Next(); a.Compare(last) <= 0; a = a.Next() {
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

// Overlaps reports whether two prefixes share any address.
func Overlaps(a, b netip.Prefix) bool { return a.Overlaps(b) }

// PickSubnet returns the first subnet of the pools that overlaps none of taken.
func PickSubnet(pools []Pool, taken []netip.Prefix) (netip.Prefix, error) {
	for _, pool := range pools {
		// Pools come from the caller: one the loop below cannot carve (a size
		// outside the base's prefix length../30, or no IPv4 base) is an error, not
		// a negative shift.
		if !isIPv4(pool.Base) || pool.Size < max(pool.Base.Bits(), 8) || pool.Size > MaxPrefixLen {
			return netip.Prefix{}, fmt.Errorf("pick a subnet: bad pool %s with size /%d: want an IPv4 base and a size from its prefix length (at least /8) to /%d", pool.Base, pool.Size, MaxPrefixLen)
		}
		step := uint64(1) << (32 - pool.Size)
		count := uint64(1) << (pool.Size - pool.Base.Bits())
		base := toUint(pool.Base.Masked().Addr())
		for i := uint64(0); i < count; i++ {
			cand := netip.PrefixFrom(fromUint(uint32(base+i*step)), pool.Size)
			if !overlapsAny(cand, taken) {
				return cand, nil
			}
		}
	}
	return netip.Prefix{}, fmt.Errorf("pick a subnet: every subnet of the pools is in use or overlaps a host route (%w); give one with --subnet", ErrPoolExhausted)
}

func overlapsAny(p netip.Prefix, taken []netip.Prefix) bool {
	for _, t := range taken {
		if p.Overlaps(t) {
			return true
		}
	}
	return false
}

func toUint(a netip.Addr) uint64 {
	b := a.As4()
	return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
}

func fromUint(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
