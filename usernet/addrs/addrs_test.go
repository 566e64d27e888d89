package addrs

import (
	"net/netip"
	"testing"
)

func TestOf(t *testing.T) {
	tests := []struct {
		subnet              string
		gateway, dns, guest string // "" when refused
	}{
		{"10.0.2.0/24", "10.0.2.2", "10.0.2.3", "10.0.2.100"},
		{"10.0.3.7/24", "10.0.3.2", "10.0.3.3", "10.0.3.100"},
		{"192.168.0.0/16", "192.168.0.2", "192.168.0.3", "192.168.0.100"},
		{"10.0.2.128/25", "10.0.2.130", "10.0.2.131", "10.0.2.228"},
		{"10.0.2.0/26", "", "", ""},
		{"fd00::/64", "", "", ""},
	}
	for _, tt := range tests {
		a, err := Of(netip.MustParsePrefix(tt.subnet))
		if tt.guest == "" {
			if err == nil {
				t.Errorf("Of(%s) = %+v, want an error", tt.subnet, a)
			}
			continue
		}
		if err != nil || a.Gateway.String() != tt.gateway || a.DNS.String() != tt.dns || a.Guest.String() != tt.guest {
			t.Errorf("Of(%s) = %+v, %v; want gateway %s, dns %s, guest %s", tt.subnet, a, err, tt.gateway, tt.dns, tt.guest)
		}
	}
	if DefaultSubnet().String() != "10.0.2.0/24" {
		t.Errorf("DefaultSubnet() = %s", DefaultSubnet())
	}
}

func TestIPv6(t *testing.T) {
	a := IPv6()
	if a.Subnet.String() != "fd00::/64" || a.Gateway.String() != "fd00::2" || a.DNS.String() != "fd00::3" || a.Guest.String() != "fd00::100" {
		t.Errorf("IPv6() = %+v, want slirp4netns' fd00::/64, fd00::2, fd00::3, fd00::100", a)
	}
}
