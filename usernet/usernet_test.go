package usernet

import (
	"cmp"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/usernet/addrs"
)

func TestConfigWithDefaults(t *testing.T) {
	addr := netip.MustParseAddr
	for _, tc := range []struct {
		name                string
		in                  Config
		gateway, dns, guest netip.Addr
		mtu                 uint32
		wantErr             bool
	}{
		{name: "slirp4netns defaults", gateway: addr("10.0.2.2"), dns: addr("10.0.2.3"), guest: addr("10.0.2.100"), mtu: 65520},
		{name: "other subnet", in: Config{Subnet: netip.MustParsePrefix("10.77.0.0/24"), MTU: 1500},
			gateway: addr("10.77.0.2"), dns: addr("10.77.0.3"), guest: addr("10.77.0.100"), mtu: 1500},
		{name: "unmasked subnet", in: Config{Subnet: netip.MustParsePrefix("10.77.0.9/24")},
			gateway: addr("10.77.0.2"), dns: addr("10.77.0.3"), guest: addr("10.77.0.100"), mtu: 65520},
		{name: "explicit guest", in: Config{Guest: addr("10.0.2.15")},
			gateway: addr("10.0.2.2"), dns: addr("10.0.2.3"), guest: addr("10.0.2.15"), mtu: 65520},
		{name: "subnet too small for .100", in: Config{Subnet: netip.MustParsePrefix("10.0.2.0/28")}, wantErr: true},
		{name: "ipv6 subnet", in: Config{Subnet: netip.MustParsePrefix("fd00::/64")}, wantErr: true},
		{name: "guest outside subnet", in: Config{Guest: addr("192.0.2.1")}, wantErr: true},
		{name: "guest is gateway", in: Config{Guest: addr("10.0.2.2")}, wantErr: true},
		{name: "mtu too large", in: Config{MTU: 65521}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Resolvers = []netip.AddrPort{}
			got, err := tc.in.WithDefaults()
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("err = %v, want ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Gateway != tc.gateway || got.DNS != tc.dns || got.Guest != tc.guest || got.MTU != tc.mtu || got.Logger == nil {
				t.Errorf("got gateway %s dns %s guest %s mtu %d", got.Gateway, got.DNS, got.Guest, got.MTU)
			}
		})
	}
}

// A query no resolver answers gets SERVFAIL at once; what is not DNS gets nothing.
func TestServfail(t *testing.T) {
	s := &Stack{ctx: t.Context(), log: slog.New(slog.DiscardHandler)} // no resolvers
	var q dns.Msg
	q.SetQuestion("probe.ctnet.test.", dns.TypeA)
	q.Id = 4242
	packed, _ := q.Pack()
	var a dns.Msg
	if err := a.Unpack(s.resolve(packed)); err != nil {
		t.Fatal(err)
	}
	if a.Id != 4242 || !a.Response || a.Rcode != dns.RcodeServerFailure || len(a.Question) != 1 {
		t.Errorf("answer = %v", a)
	}
	if s.resolve([]byte{1, 2, 3}) != nil {
		t.Error("the answer to garbage should be nil")
	}
}

// The host's loopback is reached through the gateway addresses only, when allowed,
// in either family: no IPv6 address that a host socket would take to 127.0.0.1 or
// ::1 is dialled.
func TestHostTarget(t *testing.T) {
	s := &Stack{v6: addrs.IPv6()}
	for _, allow := range []bool{false, true} {
		cfg, err := Config{AllowHostLoopback: allow, Resolvers: []netip.AddrPort{}}.WithDefaults()
		if err != nil {
			t.Fatal(err)
		}
		s.cfg = cfg
		for _, tc := range []struct {
			dst  string
			want string // "" = refused
		}{
			{"10.0.2.2", map[bool]string{false: "", true: "127.0.0.1:80"}[allow]},
			{"10.0.2.3", ""},
			{"10.0.2.77", ""},
			{"10.0.2.255", ""},
			{"224.0.0.251", ""},
			{"255.255.255.255", ""},
			{"0.0.0.0", ""},
			{"198.51.100.1", "198.51.100.1:80"},
			{"10.1.2.3", "10.1.2.3:80"},
			{"fd00::2", map[bool]string{false: "", true: "[::1]:80"}[allow]},
			{"fd00::3", ""},
			{"fd00::100", ""},
			{"fd00::77", ""},
			{"::1", ""},
			{"::", ""},
			{"::ffff:127.0.0.1", ""},
			{"::ffff:198.51.100.1", ""},
			{"::127.0.0.1", ""},
			{"fe80::1", ""},
			{"ff02::1", ""},
			{"2001:db8::1", "[2001:db8::1]:80"},
			{"fd01::1", "[fd01::1]:80"},
		} {
			got, ok := s.hostTarget(netip.MustParseAddr(tc.dst), 80)
			if (tc.want == "") == ok || (ok && got.String() != tc.want) {
				t.Errorf("allow=%v %s: got %v %v, want %q", allow, tc.dst, got, ok, tc.want)
			}
		}
	}
}

func TestEncodeVnetHdr(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gso     stack.GSO
		payload int
		l3      int // network header length; 0: IPv4's 20
		want    []byte
	}{
		{name: "no offload", payload: 100, want: make([]byte, vnetHdrSize)},
		{name: "partial checksum", payload: 100,
			gso:  stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, L3HdrLen: 20, CsumOffset: 16, MSS: 1460},
			want: []byte{1, 0, 54, 0, 0, 0, 34, 0, 16, 0}},
		{name: "segmentation", payload: 3000,
			gso:  stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, L3HdrLen: 20, CsumOffset: 16, MSS: 1460},
			want: []byte{1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0}},
		{name: "IPv6 segmentation", payload: 3000, l3: 40,
			gso:  stack.GSO{Type: stack.GSOTCPv6, NeedsCsum: true, L3HdrLen: 40, CsumOffset: 16, MSS: 1440},
			want: []byte{1, 4, 74, 0, 0xa0, 0x05, 54, 0, 16, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l3 := cmp.Or(tc.l3, 20)
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
				ReserveHeaderBytes: 34 + l3,
				Payload:            buffer.MakeWithData(make([]byte, tc.payload)),
			})
			defer pkt.DecRef()
			pkt.TransportHeader().Push(20)
			pkt.NetworkHeader().Push(l3)
			pkt.LinkHeader().Push(header.EthernetMinimumSize)
			pkt.GSOOptions = tc.gso
			got := make([]byte, vnetHdrSize)
			encodeVnetHdr(got, pkt)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// CheckPing, in a namespace whose net.ipv4.ping_group_range admits nobody, says that
// pinging is not permitted and which setting to change; where the range admits every
// group, it succeeds. Both in a sandbox of the test's own: the sysctl is per namespace.
func TestCheckPingExplainsSysctl(t *testing.T) {
	sb := lab.NewSandbox(t)
	ns := sb.NS(t)
	for _, tc := range []struct {
		groupRange string
		denied     bool
	}{
		{"1 0", true},
		{"0 2147483647", false},
	} {
		sb.Sysctl(t, "net.ipv4.ping_group_range", tc.groupRange)
		err := ns.Do(CheckPing)
		switch {
		case !tc.denied && err != nil:
			t.Errorf("ping_group_range %q: CheckPing() = %v, want nil", tc.groupRange, err)
		case tc.denied && (!errors.Is(err, ErrPingNotPermitted) || !strings.Contains(err.Error(), "net.ipv4.ping_group_range") || !strings.Contains(err.Error(), tc.groupRange)):
			t.Errorf("ping_group_range %q: CheckPing() = %v, want ErrPingNotPermitted naming the sysctl and its value", tc.groupRange, err)
		}
	}
}

func TestPortValidate(t *testing.T) {
	for _, tc := range []struct {
		p  Port
		ok bool
	}{
		{Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80}, true},
		{Port{Proto: "udp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 53, ContainerPort: 53}, true},
		{Port{Proto: "sctp", HostPort: 1, ContainerPort: 1}, false},
		{Port{Proto: "tcp", HostPort: 0, ContainerPort: 80}, false},
		{Port{Proto: "tcp", HostIP: netip.MustParseAddr("::1"), HostPort: 1, ContainerPort: 1}, true},
		{Port{Proto: "tcp", HostIP: netip.MustParseAddr("::ffff:127.0.0.1"), HostPort: 1, ContainerPort: 1}, false},
		{Port{Proto: "tcp", HostIP: netip.MustParseAddr("fe80::1%eth0"), HostPort: 1, ContainerPort: 1}, false},
	} {
		if err := validatePort(tc.p); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.p, err)
		}
	}
}
