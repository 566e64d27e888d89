package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/fixhint"
)

var (
	p = netip.MustParsePrefix
	a = netip.MustParseAddr
)

func TestParseSubnet(t *testing.T) {
	tests := []struct {
		in   string
		want netip.Prefix // invalid: an error is wanted
		why  string
	}{
		{"172.30.0.0/16", p("172.30.0.0/16"), ""},
		{" 10.0.0.0/8\n", p("10.0.0.0/8"), ""},
		{"192.168.1.0/30", p("192.168.1.0/30"), ""},
		{"192.168.1.0/31", netip.Prefix{}, "too small"},
		{"192.168.1.1/32", netip.Prefix{}, "too small"},
		{"192.168.1.1/31", netip.Prefix{}, "too small"}, // not "did you mean 192.168.1.0/31", also refused
		{"10.0.0.0/7", netip.Prefix{}, "too large"},
		{"0.0.0.0/0", netip.Prefix{}, "too large"},
		{"172.30.0.1/16", netip.Prefix{}, "did you mean 172.30.0.0/16"},
		{"172.30.0.0", netip.Prefix{}, "CIDR"},
		{"172.30.0.0/33", netip.Prefix{}, "CIDR"},
		{"172.30.0.0/-1", netip.Prefix{}, "CIDR"},
		{"172.030.0.0/16", netip.Prefix{}, "CIDR"},
		{"fd00::/64", netip.Prefix{}, "IPv4"},
		{"::ffff:10.0.0.0/104", netip.Prefix{}, "IPv4"},
		{"", netip.Prefix{}, "CIDR"},
		{"a\nb", netip.Prefix{}, "CIDR"},
	}
	for _, tt := range tests {
		got, err := ParseSubnet(tt.in)
		if tt.want.IsValid() {
			if err != nil || got != tt.want {
				t.Errorf("ParseSubnet(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			continue
		}
		fixhint.Require(t, tt.in, err)
		if !strings.Contains(err.Error(), tt.why) {
			t.Errorf("ParseSubnet(%q): error %q does not mention %q", tt.in, err, tt.why)
		}
	}
}

// FuzzParseSubnet checks that an accepted subnet is what a network can use: IPv4,
// host bits clear, /8 to /30.
func FuzzParseSubnet(f *testing.F) {
	for _, s := range []string{"172.30.0.0/16", "10.0.0.0/8", "192.168.1.0/30", "172.30.0.1/16", "fd00::/64", "0.0.0.0/0", "1.2.3.4/31"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseSubnet(in)
		if err != nil {
			fixhint.Require(t, in, err)
			// A suggested correction must itself be accepted.
			if _, fix, ok := strings.Cut(err.Error(), "did you mean "); ok {
				fix = strings.TrimSuffix(fix, "?")
				if _, err := ParseSubnet(fix); err != nil {
					t.Fatalf("ParseSubnet(%q) suggests %q, which it refuses: %v", in, fix, err)
				}
			}
			return
		}
		switch {
		case !got.IsValid() || !got.Addr().Is4():
			t.Fatalf("ParseSubnet(%q) = %v, not an IPv4 prefix", in, got)
		case got.Masked() != got:
			t.Fatalf("ParseSubnet(%q) = %v, with host bits set", in, got)
		case got.Bits() < 8 || got.Bits() > MaxPrefixLen:
			t.Fatalf("ParseSubnet(%q) = %v, outside /8../%d", in, got, MaxPrefixLen)
		case !IsHost(got, FirstHost(got)) || !IsHost(got, Broadcast(got).Prev()):
			t.Fatalf("ParseSubnet(%q) = %v, without room for a gateway and a container", in, got)
		}
	})
}

func TestParseAddr(t *testing.T) {
	for _, in := range []string{"172.30.0.10", " 10.0.0.1 ", "0.0.0.0", "255.255.255.255"} {
		if got, err := ParseAddr("--ip", in); err != nil || !got.Is4() {
			t.Errorf("ParseAddr(%q) = %v, %v; want an IPv4 address", in, got, err)
		}
	}
	for _, in := range []string{"", "::1", "::ffff:10.0.0.1", "fe80::1%eth0", "10.0.0", "10.0.0.256", "010.0.0.1", "10.0.0.1/24", "host"} {
		got, err := ParseAddr("--ip", in)
		if err == nil {
			t.Errorf("ParseAddr(%q) = %v, want an error", in, got)
			continue
		}
		fixhint.Require(t, in, err)
		if !strings.Contains(err.Error(), "--ip") {
			t.Errorf("ParseAddr(%q): error %q does not name the option", in, err)
		}
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"172.30.0.10", "::1", "::ffff:1.2.3.4", "1.2.3", "1.2.3.4%x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseAddr("--gateway", in)
		if err != nil {
			fixhint.Require(t, in, err)
			return
		}
		if !got.Is4() || got.Zone() != "" {
			t.Fatalf("ParseAddr(%q) = %v, not a plain IPv4 address", in, got)
		}
		if again, err := ParseAddr("--gateway", got.String()); err != nil || again != got {
			t.Fatalf("ParseAddr(%q) = %v, which prints as %q and parses to %v, %v", in, got, got.String(), again, err)
		}
	})
}

func TestBroadcastAndHosts(t *testing.T) {
	tests := []struct {
		prefix           netip.Prefix
		first, broadcast netip.Addr
	}{
		{p("172.17.0.0/16"), a("172.17.0.1"), a("172.17.255.255")},
		{p("10.0.0.0/8"), a("10.0.0.1"), a("10.255.255.255")},
		{p("192.168.1.4/30"), a("192.168.1.5"), a("192.168.1.7")},
		{p("192.168.1.77/24"), a("192.168.1.1"), a("192.168.1.255")}, // host bits are ignored
		{p("255.255.255.252/30"), a("255.255.255.253"), a("255.255.255.255")},
	}
	for _, tt := range tests {
		if got := FirstHost(tt.prefix); got != tt.first {
			t.Errorf("FirstHost(%v) = %v, want %v", tt.prefix, got, tt.first)
		}
		if got := Broadcast(tt.prefix); got != tt.broadcast {
			t.Errorf("Broadcast(%v) = %v, want %v", tt.prefix, got, tt.broadcast)
		}
		if IsHost(tt.prefix, tt.prefix.Masked().Addr()) || IsHost(tt.prefix, tt.broadcast) || !IsHost(tt.prefix, tt.first) {
			t.Errorf("IsHost(%v) counts the network or broadcast address as a host, or not the first host", tt.prefix)
		}
	}
	// Prefixes that are not IPv4 have no broadcast address; asking must not panic.
	for _, bad := range []netip.Prefix{{}, p("fd00::/64"), p("::ffff:10.0.0.0/104")} {
		if got := Broadcast(bad); got.IsValid() {
			t.Errorf("Broadcast(%v) = %v, want the zero Addr", bad, got)
		}
		if IsHost(bad, a("fd00::1")) {
			t.Errorf("IsHost(%v, fd00::1) = true for a prefix that is not IPv4", bad)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	subnet := p("172.18.0.0/16")
	tests := []struct {
		addr netip.Addr
		why  string
	}{
		{a("172.18.0.5"), ""},
		{a("172.18.255.254"), ""},
		{a("172.19.0.5"), "outside the subnet"},
		{a("172.18.0.0"), "network or broadcast"},
		{a("172.18.255.255"), "network or broadcast"},
		{a("::ffff:172.18.0.5"), "outside the subnet"},
	}
	for _, tt := range tests {
		err := CheckAddr("--ip", subnet, tt.addr)
		if (err == nil) != (tt.why == "") || err != nil && !strings.Contains(err.Error(), tt.why) {
			t.Errorf("CheckAddr(%v, %v) = %v, want an error about %q", subnet, tt.addr, err, tt.why)
		}
	}
}

// usedSet is a set of taken addresses, as the caller's store would report them.
func usedSet(addrs ...string) func(netip.Addr) bool {
	set := map[netip.Addr]bool{}
	for _, s := range addrs {
		set[a(s)] = true
	}
	return func(x netip.Addr) bool { return set[x] }
}

func TestNext(t *testing.T) {
	subnet := p("10.0.0.0/29") // hosts .1 to .6
	tests := []struct {
		name   string
		cursor netip.Addr
		used   []string
		want   string
	}{
		{"no cursor starts after the gateway's slot", netip.Addr{}, nil, "10.0.0.1"},
		{"after the cursor", a("10.0.0.3"), nil, "10.0.0.4"},
		{"skips used addresses", a("10.0.0.1"), []string{"10.0.0.2", "10.0.0.3"}, "10.0.0.4"},
		{"wraps after the last host", a("10.0.0.6"), []string{"10.0.0.1"}, "10.0.0.2"},
		{"wraps past used hosts", a("10.0.0.5"), []string{"10.0.0.6", "10.0.0.1", "10.0.0.2"}, "10.0.0.3"},
		// Released addresses are reused last: the cursor itself comes back only when
		// everything else is taken.
		{"reuses the cursor last", a("10.0.0.3"), []string{"10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"}, "10.0.0.3"},
		{"a cursor outside the subnet starts over", a("192.168.0.9"), nil, "10.0.0.1"},
		{"a broadcast cursor starts over", a("10.0.0.7"), nil, "10.0.0.1"},
		{"a network-address cursor starts at the first host", a("10.0.0.0"), nil, "10.0.0.1"},
		{"an IPv6 cursor starts over", a("::1"), nil, "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Next(subnet, tt.cursor, usedSet(tt.used...))
			if err != nil || got != a(tt.want) {
				t.Errorf("Next(%v, %v, used %v) = %v, %v; want %s", subnet, tt.cursor, tt.used, got, err, tt.want)
			}
		})
	}
}

func TestNextExhausted(t *testing.T) {
	tests := []struct {
		subnet netip.Prefix
		used   []string
	}{
		{p("10.0.0.0/30"), []string{"10.0.0.1", "10.0.0.2"}},
		{p("10.0.0.0/29"), []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}},
		{p("10.0.0.0/31"), nil}, // no host addresses at all
		{p("10.0.0.0/32"), nil},
		{p("255.255.255.255/32"), nil}, // the step past the last address must not wrap to the zero Addr
	}
	for _, tt := range tests {
		for _, cursor := range []netip.Addr{{}, tt.subnet.Addr(), a("10.0.0.1")} {
			got, err := Next(tt.subnet, cursor, usedSet(tt.used...))
			if !errors.Is(err, ErrPoolExhausted) {
				t.Errorf("Next(%v, %v) with every host used = %v, %v; want ErrPoolExhausted", tt.subnet, cursor, got, err)
			}
		}
	}
	for _, bad := range []netip.Prefix{{}, p("fd00::/120")} {
		if got, err := Next(bad, netip.Addr{}, usedSet()); err == nil {
			t.Errorf("Next(%v) = %v, want an error for a prefix that is not IPv4", bad, got)
		}
	}
}

// FuzzNext checks Next on small subnets against the definition: an address inside the
// subnet, neither network nor broadcast, not used, the first such one after the
// cursor (wrapping); ErrPoolExhausted only when every host is used.
func FuzzNext(f *testing.F) {
	f.Add(uint32(0x0a000000), uint8(29), uint32(0x0a000003), uint64(0b0110))
	f.Add(uint32(0xac120000), uint8(24), uint32(0), uint64(0))
	f.Add(uint32(0xc0a80104), uint8(30), uint32(0xc0a80106), uint64(0b110))
	f.Add(uint32(0xffffffff), uint8(26), uint32(0xfffffffe), ^uint64(0))
	f.Fuzz(func(t *testing.T, base uint32, bits uint8, cursor uint32, usedBits uint64) {
		// Subnets of at most 64 addresses, so usedBits can say which are taken.
		bits = 26 + bits%7 // /26 to /32
		subnet := netip.PrefixFrom(fromUint(base), int(bits)).Masked()
		start := toUint(subnet.Addr())
		size := uint64(1) << (32 - bits)
		used := func(x netip.Addr) bool {
			off := toUint(x) - start
			if !subnet.Contains(x) {
				t.Fatalf("Next asked whether %v is used, outside %v", x, subnet)
			}
			return usedBits&(1<<off) != 0
		}
		cur := fromUint(cursor)
		got, err := Next(subnet, cur, used)
		if err != nil {
			if !errors.Is(err, ErrPoolExhausted) {
				t.Fatalf("Next(%v, %v): %v, want ErrPoolExhausted", subnet, cur, err)
			}
			for off := uint64(1); off+1 < size; off++ {
				if usedBits&(1<<off) == 0 {
					t.Fatalf("Next(%v, %v) is exhausted, but %v is free", subnet, cur, fromUint(uint32(start+off)))
				}
			}
			return
		}
		if !subnet.Contains(got) || !IsHost(subnet, got) || used(got) {
			t.Fatalf("Next(%v, %v) = %v: outside, network, broadcast or used", subnet, cur, got)
		}
		// Nothing free lies strictly between the cursor and the result, going round.
		from := uint64(0)
		if subnet.Contains(cur) && cur != Broadcast(subnet) && cur != Broadcast(subnet).Prev() {
			from = toUint(cur) - start
		}
		for off := (from + 1) % size; off != toUint(got)-start; off = (off + 1) % size {
			if off != 0 && off != size-1 && usedBits&(1<<off) == 0 {
				t.Fatalf("Next(%v, %v) = %v, but %v comes first and is free", subnet, cur, got, fromUint(uint32(start+off)))
			}
		}
	})
}

func TestPickSubnetFollowsDockerPools(t *testing.T) {
	tests := []struct {
		name  string
		taken []netip.Prefix
		want  netip.Prefix
	}{
		{"first pool first", nil, p("172.17.0.0/16")},
		{"skips a taken subnet", []netip.Prefix{p("172.17.0.0/16")}, p("172.18.0.0/16")},
		{"skips a subnet a host route overlaps", []netip.Prefix{p("172.17.5.0/24"), p("172.18.0.0/15")}, p("172.20.0.0/16")},
		{"skips a route covering several", []netip.Prefix{p("172.16.0.0/12")}, p("192.168.0.0/20")},
		{"a default route does not count as IPv6", []netip.Prefix{p("::/0")}, p("172.17.0.0/16")},
		{"then the /20s of 192.168", []netip.Prefix{p("172.16.0.0/12"), p("192.168.0.0/20"), p("192.168.16.5/32")}, p("192.168.32.0/20")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PickSubnet(DefaultPools, tt.taken)
			if err != nil || got != tt.want {
				t.Errorf("PickSubnet(default pools, %v) = %v, %v; want %v", tt.taken, got, err, tt.want)
			}
		})
	}
}

func TestPickSubnetOrderMatchesDocker(t *testing.T) {
	// Docker hands out 172.17 to 172.31 in order, then 192.168.0.0/20, 192.168.16.0/20, …
	var want []string
	for i := 17; i <= 31; i++ {
		want = append(want, fmt.Sprintf("172.%d.0.0/16", i))
	}
	for i := 0; i < 256; i += 16 {
		want = append(want, fmt.Sprintf("192.168.%d.0/20", i))
	}
	var taken []netip.Prefix
	for _, w := range want {
		got, err := PickSubnet(DefaultPools, taken)
		if err != nil || got.String() != w {
			t.Fatalf("after %d subnets: PickSubnet = %v, %v; want %s", len(taken), got, err, w)
		}
		if _, err := ParseSubnet(got.String()); err != nil {
			t.Fatalf("PickSubnet gave %v, which --subnet would refuse: %v", got, err)
		}
		taken = append(taken, got)
	}
	got, err := PickSubnet(DefaultPools, taken)
	if !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("with every pool used, PickSubnet = %v, %v; want ErrPoolExhausted", got, err)
	}
	if !strings.Contains(err.Error(), "--subnet") {
		t.Errorf("exhaustion error %q does not say to give a subnet", err)
	}
}

func TestPickSubnetRefusesBadPools(t *testing.T) {
	for _, pool := range []Pool{
		{Base: p("10.0.0.0/16"), Size: 8},   // subnets larger than the pool
		{Base: p("10.0.0.0/16"), Size: 33},  // past IPv4
		{Base: p("10.0.0.0/16"), Size: 31},  // no room for a container
		{Base: p("0.0.0.0/0"), Size: 4},     // larger than /8
		{Base: p("fd00::/48"), Size: 64},    // IPv6
		{Base: netip.Prefix{}, Size: 16},    // zero value
		{Base: p("10.0.0.0/16"), Size: -16}, // negative
	} {
		got, err := PickSubnet([]Pool{pool}, nil)
		if err == nil {
			t.Errorf("PickSubnet(%+v) = %v, want an error", pool, got)
			continue
		}
		fixhint.Require(t, pool.Base.String(), err)
	}
}
