package network

import (
	"net/netip"
	"strings"
	"testing"
)

var loopback = netip.MustParseAddr("127.0.0.1")

func TestParsePortAcceptsDockerSyntax(t *testing.T) {
	tests := []struct {
		in   string
		want PortSpec
	}{
		{"80", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{"8080:80", PortSpec{HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{"127.0.0.1:8080:80", PortSpec{HostIP: loopback, HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		// An empty host port asks for a free one, with or without an address.
		{"127.0.0.1::80", PortSpec{HostIP: loopback, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{":80", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{"::80", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{"8000-8010:80-90", PortSpec{HostPort: 8000, HostPortEnd: 8010, ContainerPort: 80, CPEnd: 90, Proto: "tcp"}},
		// A host range with one container port: the first free port of the range.
		{"8000-8010:80", PortSpec{HostPort: 8000, HostPortEnd: 8010, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{"80-90", PortSpec{ContainerPort: 80, CPEnd: 90, Proto: "tcp"}},
		{"80-80", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{"80/udp", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "udp"}},
		{"80/sctp", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "sctp"}},
		{"80/TCP", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		// An IPv6 host address is in brackets; a ctnet network refuses it, a
		// user-mode network serves it.
		{"[::1]:8080:80", PortSpec{HostIP: netip.IPv6Loopback(), HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{"[::1]::80", PortSpec{HostIP: netip.IPv6Loopback(), ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{"[::]:53:53/udp", PortSpec{HostIP: netip.IPv6Unspecified(), HostPort: 53, HostPortEnd: 53, ContainerPort: 53, CPEnd: 53, Proto: "udp"}},
		{"[2001:db8::1]:8000-8001:80-81", PortSpec{HostIP: netip.MustParseAddr("2001:db8::1"), HostPort: 8000, HostPortEnd: 8001, ContainerPort: 80, CPEnd: 81, Proto: "tcp"}},
		{"0.0.0.0:53:53/udp", PortSpec{HostIP: netip.IPv4Unspecified(), HostPort: 53, HostPortEnd: 53, ContainerPort: 53, CPEnd: 53, Proto: "udp"}},
		{"1", PortSpec{ContainerPort: 1, CPEnd: 1, Proto: "tcp"}},
		{"65535:65535", PortSpec{HostPort: 65535, HostPortEnd: 65535, ContainerPort: 65535, CPEnd: 65535, Proto: "tcp"}},
		// An IPv6 host address in brackets, as Docker writes it.
		{"[2001:db8::5]:8080:80", PortSpec{HostIP: netip.MustParseAddr("2001:db8::5"), HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
		{"[::]::53/udp", PortSpec{HostIP: netip.IPv6Unspecified(), ContainerPort: 53, CPEnd: 53, Proto: "udp"}},
		// Leading zeros are decimal, as Docker reads them.
		{"080", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "tcp"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePort(tt.in)
			if err != nil {
				t.Fatalf("ParsePort(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParsePort(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if err := got.check(); err != nil {
				t.Errorf("ParsePort(%q) returned a spec its own check refuses: %v", tt.in, err)
			}
			again, err := ParsePort(got.String())
			if err != nil || again != got {
				t.Errorf("ParsePort(%q).String() = %q parses to %+v, %v; want %+v", tt.in, got.String(), again, err, got)
			}
		})
	}
}

func TestParsePortRefusesWithReason(t *testing.T) {
	tests := []struct {
		in, why string // why: a part of the error message that names the problem
	}{
		{"", "container port"},
		{"0", "not a port number from 1 to 65535"},
		// Docker reads host port 0 as "choose one"; ctnet says so with an empty host port.
		{"0:80", "host port"},
		{"65536", "not a port number from 1 to 65535"},
		{"99999999999999999999", "not a port number"},
		{"8080:", "container port"},
		{"a:b:c:d", "too many ':'"},
		{"[::1]:80", "[ADDRESS]:HOSTPORT:CONTAINERPORT"},
		{"[::1]80:80", "[ADDRESS]:HOSTPORT:CONTAINERPORT"},
		{"[::1]:80:80:90", "[ADDRESS]:HOSTPORT:CONTAINERPORT"},
		{"[::1:80:80", "[ADDRESS]:HOSTPORT:CONTAINERPORT"},
		{"[::ffff:127.0.0.1]:80:80", "not an IPv6 address"},
		{"[fe80::1%eth0]:80:80", "not an IPv6 address"},
		{"[127.0.0.1]:80:80", "not an IPv6 address"},
		{"[::1]:0:80", "host port"},
		{"::1:80:80", "too many ':'"},
		{"::ffff:127.0.0.1:80:80", "too many ':'"},
		{"localhost:80:80", "IPv4 address"},
		{"01.2.3.4:80:80", "IPv4 address"},
		{"1.2.3.4%eth0:80:80", "IPv4 address"},
		{"1.2.3.4:80", "host port"},
		{"80/icmp", "protocol must be tcp, udp or sctp"},
		{"80/", "protocol must be tcp, udp or sctp"},
		{"80/tcp/udp", "container port"},
		{"90-80", "ends before it starts"},
		{"8000-8010:80-85", "differ in length"},
		{"8000:80-90", "differ in length"},
		{"80-", "container port"},
		{"-80", "container port"},
		{"80-90-100", "container port"},
		{"+80", "container port"},
		{" 80", "container port"},
		{"0x50", "container port"},
		{"80\n", "container port"},
		{"\x00", "container port"},
		{"\xff\xfe", "container port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePort(tt.in)
			if err == nil {
				t.Fatalf("ParsePort(%q) = %+v, want an error about %q", tt.in, got, tt.why)
			}
			requireFixableInputError(t, tt.in, err)
			if !strings.Contains(err.Error(), tt.why) {
				t.Errorf("ParsePort(%q): error %q does not mention %q", tt.in, err, tt.why)
			}
		})
	}
}

func TestPortSpecString(t *testing.T) {
	tests := []struct {
		spec PortSpec
		want string
	}{
		{PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "tcp"}, "80/tcp"},
		{PortSpec{HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80, CPEnd: 80, Proto: "udp"}, "8080:80/udp"},
		{PortSpec{HostIP: loopback, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}, "127.0.0.1::80/tcp"},
		{PortSpec{HostIP: loopback, HostPort: 8000, HostPortEnd: 8010, ContainerPort: 80, CPEnd: 90, Proto: "tcp"}, "127.0.0.1:8000-8010:80-90/tcp"},
		{PortSpec{HostIP: netip.IPv6Loopback(), HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}, "[::1]:8080:80/tcp"},
	}
	for _, tt := range tests {
		if got := tt.spec.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.spec, got, tt.want)
		}
	}
}

// FuzzParsePort checks that every -p value is either refused with a message that
// says what to fix, or parsed into a spec that meets the allocator's invariants and
// prints back to text that parses to the same spec.
func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"80", "8080:80", "127.0.0.1:8080:80", "127.0.0.1::80", "8000-8010:80-90",
		"8000-8010:80", "80/udp", "[::1]:80:80", "0", "65536", "8080:", ":80", "a:b:c:d", "80-90/sctp", "1-65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		spec, err := ParsePort(in)
		if err != nil {
			requireFixableInputError(t, in, err)
			return
		}
		if err := spec.check(); err != nil {
			t.Fatalf("ParsePort(%q) = %+v, which check refuses: %v", in, spec, err)
		}
		text := spec.String()
		again, err := ParsePort(text)
		if err != nil {
			t.Fatalf("ParsePort(%q) = %+v, but its String %q does not parse: %v", in, spec, text, err)
		}
		if again != spec {
			t.Fatalf("ParsePort(%q) = %+v, but its String %q parses to %+v", in, spec, text, again)
		}
	})
}
