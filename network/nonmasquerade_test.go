package network

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseNonMasquerade(t *testing.T) {
	got, err := parseNonMasquerade(NetworkSpec{NonMasquerade: []string{"192.0.2.0/24", "10.244.7.9/16"}}, true)
	want := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("192.0.2.0/24")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("parseNonMasquerade = %v, %v; want %v", got, err, want)
	}
	if !sameNonMasquerade(got, []string{"192.0.2.0/24", "10.244.0.0/16"}) || sameNonMasquerade(got, []string{"10.244.0.0/16"}) {
		t.Errorf("sameNonMasquerade does not compare the ranges as sets")
	}
}

func TestParseNonMasqueradeRefuses(t *testing.T) {
	tests := []struct {
		ranges     []string
		masquerade bool
		why        string
	}{
		{[]string{"10.244.0.0"}, true, "use IPv4 CIDRs"},
		{[]string{"10.244.0.0/33"}, true, "use IPv4 CIDRs"},
		{[]string{"fd00::/64"}, true, "use IPv4 CIDRs"},
		{[]string{""}, true, "use IPv4 CIDRs"},
		{[]string{"10.244.0.0/16", "10.244.1.0/24"}, true, "overlaps 10.244.0.0/16"},
		{[]string{"10.244.0.0/16"}, false, "does not masquerade"},
	}
	for _, tt := range tests {
		got, err := parseNonMasquerade(NetworkSpec{NonMasquerade: tt.ranges}, tt.masquerade)
		if err == nil {
			t.Errorf("parseNonMasquerade(%q, %t) = %v, want an error", tt.ranges, tt.masquerade, got)
			continue
		}
		requireFixableInputError(t, tt.ranges, err)
		if !strings.Contains(err.Error(), tt.why) || !strings.HasPrefix(err.Error(), "bad NonMasquerade") {
			t.Errorf("parseNonMasquerade(%q, %t): error %q does not name the field and say %q", tt.ranges, tt.masquerade, err, tt.why)
		}
	}
}
