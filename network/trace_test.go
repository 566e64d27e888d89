package network

import (
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A probe's destination: an address of either family, bracketed with a port for
// IPv6; a container's name is its IPv4 address while the sender has IPv4 (the host
// has), else its IPv6 one, on a network they share first, or the family -4 or -6
// asks for; ICMP to an IPv6 address is ICMPv6; a published port is its family's side.
// What cannot be traced is refused naming the fix.
func TestResolveTraceTarget(t *testing.T) {
	attach := func(network, ip, ip6 string) Attachment {
		a := Attachment{Network: network, NetworkID: network + "-id"}
		if ip != "" {
			a.IP = netip.MustParseAddr(ip)
		}
		if ip6 != "" {
			a.IP6 = netip.MustParseAddr(ip6)
		}
		return a
	}
	dualA := &Container{Name: "a", ID: "aaaa1", Attachments: []Attachment{attach("d1", "10.0.1.2", "fd00:1::2")}}
	dualB := &Container{Name: "b", ID: "bbbb1", Attachments: []Attachment{attach("d1", "10.0.1.3", "fd00:1::3")}}
	sixA := &Container{Name: "sa", ID: "sasa1", Attachments: []Attachment{attach("six", "", "fd00:6::2")}}
	// on an IPv6-only network shared with sa, and an IPv4 one shared with nobody
	both := &Container{Name: "both", ID: "both1", Attachments: []Attachment{attach("four", "10.0.4.2", ""), attach("six", "", "fd00:6::3")}}
	four := &Container{Name: "v4", ID: "v4v41", Attachments: []Attachment{attach("four", "10.0.4.3", "")}}
	web := &Container{Name: "web", ID: "webw1", Attachments: []Attachment{attach("d2", "10.0.2.2", "fd00:2::2")}, Ports: []Port{
		{HostPort: 8080, ContainerPort: 80, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.0.2.2")},
		{HostIP: netip.IPv6Unspecified(), HostPort: 8080, ContainerPort: 80, Proto: "tcp", ContainerIP: netip.MustParseAddr("fd00:2::2")},
	}}
	containers := []*Container{dualA, dualB, sixA, both, four, web}
	for _, c := range []struct {
		name     string
		from     *Container
		spec     TraceSpec
		addr     string
		port     uint16
		proto    byte
		dnatTo   string // the published port's container address
		to       string // the container the address is
		errorSay string
	}{
		{name: "ipv6 address", from: dualA, spec: TraceSpec{To: "fd00:1::3"}, addr: "fd00:1::3", proto: unix.IPPROTO_ICMPV6, to: "b"},
		{name: "ipv6 address and port", from: dualA, spec: TraceSpec{To: "[fd00:1::3]:80"}, addr: "fd00:1::3", port: 80, proto: unix.IPPROTO_TCP, to: "b"},
		{name: "ipv6 address in brackets", from: dualA, spec: TraceSpec{To: "[fd00:1::3]", Proto: "udp", Port: 53}, addr: "fd00:1::3", port: 53, proto: unix.IPPROTO_UDP, to: "b"},
		{name: "ipv4-mapped address", from: dualA, spec: TraceSpec{To: "::ffff:10.0.1.3"}, addr: "10.0.1.3", proto: unix.IPPROTO_ICMP, to: "b"},
		{name: "dual-stack name", from: dualA, spec: TraceSpec{To: "b"}, addr: "10.0.1.3", proto: unix.IPPROTO_ICMP, to: "b"},
		{name: "dual-stack name, -6", from: dualA, spec: TraceSpec{To: "b:80", Family: 6}, addr: "fd00:1::3", port: 80, proto: unix.IPPROTO_TCP, to: "b"},
		{name: "from the host", spec: TraceSpec{To: "b"}, addr: "10.0.1.3", proto: unix.IPPROTO_ICMP, to: "b"},
		{name: "ipv6-only name", from: dualA, spec: TraceSpec{To: "sa"}, addr: "fd00:6::2", proto: unix.IPPROTO_ICMPV6, to: "sa"},
		{name: "ipv6-only name from the host", spec: TraceSpec{To: "sa"}, addr: "fd00:6::2", proto: unix.IPPROTO_ICMPV6, to: "sa"},
		{name: "a shared IPv6-only network before an IPv4 one", from: sixA, spec: TraceSpec{To: "both"}, addr: "fd00:6::3", proto: unix.IPPROTO_ICMPV6, to: "both"},
		{name: "a shared IPv4 network", from: four, spec: TraceSpec{To: "both"}, addr: "10.0.4.2", proto: unix.IPPROTO_ICMP, to: "both"},
		{name: "another network, sender with IPv4", from: four, spec: TraceSpec{To: "b"}, addr: "10.0.1.3", proto: unix.IPPROTO_ICMP, to: "b"},
		{name: "another network, IPv6-only sender", from: sixA, spec: TraceSpec{To: "b"}, addr: "fd00:1::3", proto: unix.IPPROTO_ICMPV6, to: "b"},
		{name: "published on [::]", spec: TraceSpec{To: "[2001:db8::1]:8080"}, addr: "2001:db8::1", port: 8080, proto: unix.IPPROTO_TCP, dnatTo: "fd00:2::2"},
		{name: "published on 0.0.0.0", spec: TraceSpec{To: "192.0.2.1:8080"}, addr: "192.0.2.1", port: 8080, proto: unix.IPPROTO_TCP, dnatTo: "10.0.2.2"},

		{name: "-6 to an IPv4-only container", from: dualA, spec: TraceSpec{To: "v4", Family: 6},
			errorSay: "container v4 has no IPv6 address: trace it without -6, or connect it to a network made with --ipv6"},
		{name: "-4 to an IPv6-only container", spec: TraceSpec{To: "sa", Family: 4},
			errorSay: "container sa has no IPv4 address (its networks are IPv6-only): trace it without -4"},
		{name: "-6 to an IPv4 address", spec: TraceSpec{To: "10.0.1.3", Family: 6},
			errorSay: "10.0.1.3 is an IPv4 address, and -6 asks for IPv6: leave the flag out"},
		{name: "-4 to an IPv6 address", spec: TraceSpec{To: "[fd00:1::3]:80", Family: 4},
			errorSay: "fd00:1::3 is an IPv6 address, and -4 asks for IPv4: leave the flag out"},
		{name: "IP version 5", spec: TraceSpec{To: "b", Family: 5}, errorSay: "the IP version is 4 or 6"},
		{name: "no such container", spec: TraceSpec{To: "nobody"}, errorSay: "no running container nobody, and not an IP address"},
	} {
		got, err := resolveTraceTarget(c.spec, c.from, containers)
		if c.errorSay != "" {
			if err == nil || !strings.Contains(err.Error(), c.errorSay) {
				t.Errorf("%s: want an error saying %q, got %v", c.name, c.errorSay, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got.addr.String() != c.addr || got.port != c.port || got.proto != c.proto {
			t.Errorf("%s: probe to %s port %d protocol %d, want %s port %d protocol %d", c.name, got.addr, got.port, got.proto, c.addr, c.port, c.proto)
		}
		to, dnatTo := "", ""
		if got.container != nil {
			to = got.container.Name
		}
		if got.published != nil {
			dnatTo = got.published.ContainerIP.String()
		}
		if to != c.to || dnatTo != c.dnatTo {
			t.Errorf("%s: the address is container %q and published to %q, want %q and %q", c.name, to, dnatTo, c.to, c.dnatTo)
		}
	}
}

// A hop's packet text reads the IPv6 header as it does the IPv4 one, with IPv6
// addresses bracketed before a port.
func TestDescribePacketIPv6(t *testing.T) {
	header := make([]byte, 40)
	header[0], header[6] = 0x60, unix.IPPROTO_TCP
	copy(header[8:], netip.MustParseAddr("fd00:1::2").AsSlice())
	copy(header[24:], netip.MustParseAddr("fd00:1::3").AsSlice())
	tcp := &traceTarget{addr: netip.MustParseAddr("fd00:1::3"), port: 80, proto: unix.IPPROTO_TCP, protoName: "tcp"}
	if got, want := describePacket(header, []byte{0x81, 0x07, 0, 80}, tcp), "tcp [fd00:1::2]:33031 > [fd00:1::3]:80"; got != want {
		t.Errorf("tcp: %q, want %q", got, want)
	}
	header[6] = unix.IPPROTO_ICMPV6
	echo := &traceTarget{addr: netip.MustParseAddr("fd00:1::3"), proto: unix.IPPROTO_ICMPV6, protoName: "icmpv6"}
	if got, want := describePacket(header, []byte{128, 0, 0, 0}, echo), "icmpv6 fd00:1::2 > fd00:1::3"; got != want {
		t.Errorf("icmpv6: %q, want %q", got, want)
	}
}
