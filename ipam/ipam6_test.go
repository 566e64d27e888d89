package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseSubnet6(t *testing.T) {
	for _, tt := range []struct{ in, want, why string }{
		{in: "fd00:1::/64", want: "fd00:1::/64"},
		{in: "2001:db8::/48", want: "2001:db8::/48"},
		{in: "2001:db8::/126", want: "2001:db8::/126"},
		{in: "2001:db8::/127", why: "too small"},
		{in: "2001:db8::1/64", why: "did you mean 2001:db8::/64"},
		{in: "fe80::/64", why: "link-local"},
		{in: "ff02::/64", why: "multicast"},
		{in: "::/8", why: "/16 or longer"},
		{in: "10.0.0.0/8", why: "IPv6 CIDR"},
		{in: "::ffff:10.0.0.0/120", why: "IPv6 CIDR"},
		{in: "nonsense", why: "IPv6 CIDR"},
	} {
		got, err := ParseSubnet6(tt.in)
		switch {
		case tt.why == "" && (err != nil || got.String() != tt.want):
			t.Errorf("ParseSubnet6(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		case tt.why != "" && (err == nil || !strings.Contains(err.Error(), tt.why)):
			t.Errorf("ParseSubnet6(%q) = %v, %v; want an error saying %q", tt.in, got, err, tt.why)
		}
	}
}

// Next6 hands out addresses in order after the cursor, skips used ones, wraps
// around once and reports a full subnet; a /64 is not scanned whole.
func TestNext6(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix("2001:db8::/126") // ::0 anycast, ::1 ::2 ::3
	used := map[netip.Addr]bool{a("2001:db8::1"): true}
	isUsed := func(x netip.Addr) bool { return used[x] }
	if got, err := Next6(p, netip.Addr{}, isUsed); err != nil || got != a("2001:db8::2") {
		t.Fatalf("first address: %v, %v; want 2001:db8::2", got, err)
	}
	if got, err := Next6(p, a("2001:db8::3"), isUsed); err != nil || got != a("2001:db8::2") {
		t.Errorf("after the last address: %v, %v; want a wrap to 2001:db8::2", got, err)
	}
	used[a("2001:db8::2")], used[a("2001:db8::3")] = true, true
	if _, err := Next6(p, a("2001:db8::2"), isUsed); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("full subnet: %v, want ErrPoolExhausted", err)
	}
	wide := netip.MustParsePrefix("fd00::/64")
	if got, err := Next6(wide, a("fd00::ffff"), func(netip.Addr) bool { return false }); err != nil || got != a("fd00::1:0") {
		t.Errorf("after fd00::ffff: %v, %v; want fd00::1:0", got, err)
	}
}

// PickSubnet6 takes the pool's /64s in order, skipping any that overlap what is
// taken, and refuses a pool it cannot carve.
func TestPickSubnet6(t *testing.T) {
	taken := []netip.Prefix{netip.MustParsePrefix("fd63:746e:7400::/64"), netip.MustParsePrefix("fd63:746e:7400:1::5/128")}
	if got, err := PickSubnet6(DefaultPool6, taken); err != nil || got != netip.MustParsePrefix("fd63:746e:7400:2::/64") {
		t.Errorf("PickSubnet6 = %v, %v; want fd63:746e:7400:2::/64", got, err)
	}
	small := Pool{Base: netip.MustParsePrefix("fd00::/63"), Size: 64}
	if _, err := PickSubnet6(small, []netip.Prefix{netip.MustParsePrefix("fd00::/63")}); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("exhausted pool: %v, want ErrPoolExhausted", err)
	}
	if _, err := PickSubnet6(Pool{Base: netip.MustParsePrefix("10.0.0.0/8"), Size: 16}, nil); err == nil {
		t.Errorf("an IPv4 pool was accepted")
	}
}
