package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/ctnet/ctnet/internal/fixhint"
	"github.com/ctnet/ctnet/network"
)

func TestContainerName(t *testing.T) {
	long := strings.Repeat("0123456789abcdef", 4) // a containerd ID: 64 hex digits
	tests := []struct {
		id, want string
	}{
		{"pod-a", "cni-pod-a"},
		{"k8s_POD.default_1", "cni-k8s_POD.default_1"},
		{strings.Repeat("a", 60), "cni-" + strings.Repeat("a", 60)},
		{long, "cni-" + long[:47] + "-"},       // then 12 hex digits of a hash
		{"with space", "cni-"},                 // then 32 hex digits of a hash
		{"../../etc", "cni-"},                  // '/' cannot be in a name
		{"-leading-dash", "cni--leading-dash"}, // valid after the prefix
	}
	seen := map[string]string{}
	for _, tt := range tests {
		got := containerName(tt.id)
		if !strings.HasPrefix(got, tt.want) || len(got) > 64 || strings.ContainsAny(got, "/ ") {
			t.Errorf("containerName(%q) = %q, want %q… of at most 64 characters", tt.id, got, tt.want)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("containerName gives %q for both %q and %q", got, other, tt.id)
		}
		seen[got] = tt.id
		if again := containerName(tt.id); again != got {
			t.Errorf("containerName(%q) is not stable: %q, then %q", tt.id, got, again)
		}
	}
	if a, b := containerName(long), containerName(long[:63]+"x"); a == b {
		t.Errorf("IDs that differ only after the kept prefix map to one name %q", a)
	}
}

func TestRequestedIP(t *testing.T) {
	tests := []struct {
		name, conf, want, want6, wantErr string
	}{
		{"none", `{"name":"n"}`, "", "", ""},
		{"with a prefix", `{"name":"n","runtimeConfig":{"ips":["10.88.0.5/16"]}}`, "10.88.0.5", "", ""},
		{"without", `{"name":"n","runtimeConfig":{"ips":["10.88.0.5"]}}`, "10.88.0.5", "", ""},
		{"one of each family", `{"name":"n","runtimeConfig":{"ips":["fd00::5/64","10.88.0.5/16"]}}`, "10.88.0.5", "fd00::5", ""},
		{"IPv6 only", `{"name":"n","runtimeConfig":{"ips":["fd00::5"]}}`, "", "fd00::5", ""},
		{"two IPv4", `{"name":"n","runtimeConfig":{"ips":["10.88.0.5","10.88.0.6"]}}`, "", "", "one of each family"},
		{"two IPv6", `{"name":"n","runtimeConfig":{"ips":["fd00::5","fd00::6"]}}`, "", "", "one of each family"},
		{"not an address", `{"name":"n","runtimeConfig":{"ips":["ten"]}}`, "", "", "bad address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := parseConf([]byte(tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			got, got6, err := conf.requestedIP()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want an error saying %q, got %q, %q, %v", tt.wantErr, got, got6, err)
				}
				return
			}
			if err != nil || got != tt.want || got6 != tt.want6 {
				t.Errorf("got %q, %q, %v; want %q, %q", got, got6, err, tt.want, tt.want6)
			}
		})
	}
}

func TestPortSpecs(t *testing.T) {
	tests := []struct {
		name, conf string
		want       []string // PortSpec.String() of each
		wantErr    string
	}{
		{"none", `{"name":"n"}`, nil, ""},
		{"tcp by default", `{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80}]}}`, []string{"8080:80/tcp"}, ""},
		{"protocol in capitals, host address",
			`{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":53,"containerPort":5353,"protocol":"UDP","hostIP":"127.0.0.1"}]}}`,
			[]string{"127.0.0.1:53:5353/udp"}, ""},
		{"port out of range", `{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80}]}}`, nil, "65535"},
		{"unknown protocol", `{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}}`, nil, "tcp, udp or sctp"},
		{"IPv6 host address skipped, as portmap skips the other family",
			`{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"::"},{"hostPort":80,"containerPort":80,"hostIP":"0.0.0.0"}]}}`,
			[]string{"0.0.0.0:80:80/tcp"}, ""},
		{"host address that is not one", `{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"nohost"}]}}`, nil, "port mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := parseConf([]byte(tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			specs, err := conf.portSpecs()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want an error saying %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range specs {
				got = append(got, s.String())
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzNetConf feeds the plugin what a runtime could: any configuration bytes and any
// container ID. Nothing panics; every container ID maps to a ctnet container name, its
// own (a valid short ID unchanged, two IDs never to one name); every port mapping
// but an IPv6 one is accepted as exactly the ports, protocol and address it names,
// or the whole configuration refused; and it reads back the same through the -p
// parser.
func FuzzNetConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"podnet","type":"ctnet","subnet":"10.88.0.0/16"}`), "pod-a")
	f.Add([]byte(`{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}}`), strings.Repeat("f", 64))
	f.Add([]byte(`{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":-1,"containerPort":0,"protocol":"UDP","hostIP":"::"}]}}`), "../x y")
	f.Add([]byte(`{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":53,"containerPort":53,"protocol":"sctp","hostIP":"1.2.3.4:5"}]}}`), "")
	f.Fuzz(func(t *testing.T, conf []byte, id string) {
		name := containerName(id)
		if !strings.HasPrefix(name, "cni-") || len(name) > 64 ||
			strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "" {
			t.Fatalf("containerName(%q) = %q: not a ctnet container name", id, name)
		}
		if len(id) <= 60 && id != "" && strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == "" && name != "cni-"+id {
			t.Errorf("containerName(%q) = %q: a valid short ID is kept as it is", id, name)
		}
		for _, other := range []string{id + "a", id + "-", strings.ToUpper(id), "x" + id} {
			if other != id && containerName(other) == name {
				t.Errorf("containerName gives %q both for %q and %q", name, id, other)
			}
		}
		c, err := parseConf(conf)
		if err != nil {
			return
		}
		specs, err := c.portSpecs()
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error spans lines: %q", err)
			}
			return
		}
		var mappings []portMapping
		for _, pm := range c.RuntimeConfig.PortMappings {
			if ip, err := netip.ParseAddr(pm.HostIP); err != nil || !ip.Is6() || ip.Is4In6() {
				mappings = append(mappings, pm)
			}
		}
		if len(specs) != len(mappings) {
			t.Fatalf("%d port mappings (not IPv6) give %d ports: %v", len(mappings), len(specs), specs)
		}
		for i, s := range specs {
			back, err := network.ParsePort(s.String())
			if err != nil || back != s {
				t.Fatalf("port %v reads back as %v, %v", s, back, err)
			}
			pm := mappings[i]
			proto := strings.ToLower(pm.Protocol)
			if proto == "" {
				proto = "tcp"
			}
			if int(s.HostPort) != pm.HostPort || s.HostPortEnd != s.HostPort || int(s.ContainerPort) != pm.ContainerPort || s.CPEnd != s.ContainerPort || s.Proto != proto {
				t.Errorf("port mapping %+v is accepted as %v", pm, s)
			}
			if ip, err := netip.ParseAddr(pm.HostIP); (err == nil && !ip.IsUnspecified() && s.HostIP != ip.Unmap()) || (err != nil && s.HostIP.IsValid()) {
				t.Errorf("port mapping %+v on host address %q is accepted on %v", pm, pm.HostIP, s.HostIP)
			}
		}
	})
}

// The library names its spec's fields; a runtime's user knows the configuration's.
func TestErrorsNameConfigurationKeys(t *testing.T) {
	ip := &network.FieldError{Field: "IP", Value: "10.0.0.300", Err: errors.New("want an IPv4 address")}
	if got, want := confText(fmt.Errorf("create: %w", ip)), `create: bad runtimeConfig.ips "10.0.0.300": want an IPv4 address`; got != want {
		t.Errorf("confText = %q, want %q", got, want)
	}
	if got := confText(errors.New("plain")); got != "plain" {
		t.Errorf("confText(plain) = %q", got)
	}
}

// An IPAM plugin's result ctnet cannot use is refused in one line saying what to
// change; one it can use gives the container's address and the network's gateway.
func TestLeaseFrom(t *testing.T) {
	ipConf := func(addr, gw string) *types100.IPConfig {
		ip, ipnet, err := net.ParseCIDR(addr)
		if err != nil {
			t.Fatal(err)
		}
		ipnet.IP = ip
		return &types100.IPConfig{Address: *ipnet, Gateway: net.ParseIP(gw)}
	}
	_, defaultRoute, _ := net.ParseCIDR("0.0.0.0/0")
	_, otherRoute, _ := net.ParseCIDR("192.168.0.0/16")
	_, defaultRoute6, _ := net.ParseCIDR("::/0")
	_, otherRoute6, _ := net.ParseCIDR("fd00:1::/64")
	tests := []struct {
		name, conf       string
		res              *types100.Result
		wantAddr, wantGW string
		wantErr          string
		// On a network with "ipv6": the IPv6 address and gateway, "" for none.
		wantAddr6, wantGW6 string
	}{
		{"one IPv4 address", `{"name":"n","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", "10.244.1.1")}, Routes: []*types.Route{{Dst: *defaultRoute}}},
			"10.244.1.5/24", "10.244.1.1", "", "", ""},
		{"IPv6 left unused", `{"name":"n","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("fd00::5/64", "fd00::1"), ipConf("10.244.1.5/24", "")}},
			"10.244.1.5/24", "", "", "", ""},
		{"within the configuration's subnet", `{"name":"n","subnet":"10.244.0.0/16","gateway":"10.244.1.1","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", "10.244.1.1")}}, "10.244.1.5/24", "10.244.1.1", "", "", ""},
		{"no IPv4 address", `{"name":"n","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("fd00::5/64", "fd00::1")}}, "", "", "gave no IPv4 address", "", ""},
		{"two IPv4 addresses", `{"name":"n","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", ""), ipConf("10.245.1.5/24", "")}}, "", "", "gave 2 IPv4 addresses", "", ""},
		{"outside the subnet", `{"name":"n","subnet":"10.244.0.0/16","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.245.1.5/24", "")}}, "", "", "outside subnet 10.244.0.0/16", "", ""},
		{"another gateway", `{"name":"n","gateway":"10.244.1.254","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", "10.244.1.1")}}, "", "", "gateway 10.244.1.1", "", ""},
		{"a route other than the default", `{"name":"n","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", "")}, Routes: []*types.Route{{Dst: *otherRoute}}}, "", "", "192.168.0.0/16", "", ""},
		{"an IPv6 route other than the default, unused", `{"name":"n","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", "")}, Routes: []*types.Route{{Dst: *otherRoute6}}}, "10.244.1.5/24", "", "", "", ""},
		{"dual stack", `{"name":"n","ipv6":true,"ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("fd00:244::5/64", "fd00:244::1"), ipConf("10.244.1.5/24", "10.244.1.1")},
				Routes: []*types.Route{{Dst: *defaultRoute}, {Dst: *defaultRoute6}}},
			"10.244.1.5/24", "10.244.1.1", "", "fd00:244::5/64", "fd00:244::1"},
		{"dual stack, no IPv6 range", `{"name":"n","ipv6":true,"ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", "")}}, "10.244.1.5/24", "", "", "", ""},
		{"dual stack within the configuration's subnet6", `{"name":"n","ipv6":true,"subnet6":"fd00:244::/56","gateway6":"fd00:244::1","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", ""), ipConf("fd00:244::5/64", "fd00:244::1")}},
			"10.244.1.5/24", "", "", "fd00:244::5/64", "fd00:244::1"},
		{"two IPv6 addresses", `{"name":"n","ipv6":true,"ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", ""), ipConf("fd00:244::5/64", ""), ipConf("fd00:245::5/64", "")}},
			"", "", "gave 2 IPv6 addresses", "", ""},
		{"IPv6 outside subnet6", `{"name":"n","ipv6":true,"subnet6":"fd00:245::/64","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", ""), ipConf("fd00:244::5/64", "")}},
			"", "", "outside subnet6 fd00:245::/64", "", ""},
		{"another IPv6 gateway", `{"name":"n","ipv6":true,"gateway6":"fd00:244::fe","ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", ""), ipConf("fd00:244::5/64", "fd00:244::1")}},
			"", "", "gateway6 is fd00:244::fe", "", ""},
		{"an IPv6 route other than the default", `{"name":"n","ipv6":true,"ipam":{"type":"host-local"}}`,
			&types100.Result{IPs: []*types100.IPConfig{ipConf("10.244.1.5/24", ""), ipConf("fd00:244::5/64", "")}, Routes: []*types.Route{{Dst: *otherRoute6}}},
			"", "", "fd00:1::/64", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := parseConf([]byte(tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			tt.res.CNIVersion = "1.0.0"
			lease, err := leaseFrom(conf, tt.res)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want an error saying %q, got %v", tt.wantErr, err)
				}
				fixhint.Require(t, tt.conf, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gw := ""
			if lease.gateway.IsValid() {
				gw = lease.gateway.String()
			}
			if lease.addr.String() != tt.wantAddr || gw != tt.wantGW {
				t.Errorf("lease %s with gateway %q, want %s with %q", lease.addr, gw, tt.wantAddr, tt.wantGW)
			}
			addr6, gw6 := "", ""
			if lease.addr6.IsValid() {
				addr6 = lease.addr6.String()
			}
			if lease.gateway6.IsValid() {
				gw6 = lease.gateway6.String()
			}
			if addr6 != tt.wantAddr6 || gw6 != tt.wantGW6 {
				t.Errorf("IPv6 lease %q with gateway %q, want %q with %q", addr6, gw6, tt.wantAddr6, tt.wantGW6)
			}
		})
	}
}

// The runtime learns of ctnet's failure first, with its code when it has one, and
// of the IPAM plugin's after it.
func TestWithIPAMError(t *testing.T) {
	ipamErr := types.NewError(types.ErrTryAgainLater, "store locked", "")
	ctnetCNIErr := types.NewError(types.ErrInvalidNetworkConfig, "bad subnet", "")
	plain := errors.New("kernel said no")
	tests := []struct {
		name        string
		err, ipam   error
		wantCode    uint // 0: no CNI error in the chain
		wantMessage []string
	}{
		{"neither", nil, nil, 0, nil},
		{"only IPAM's", nil, ipamErr, types.ErrTryAgainLater, []string{"store locked"}},
		{"ctnet's CNI error first", ctnetCNIErr, ipamErr, types.ErrInvalidNetworkConfig, []string{"bad subnet", "store locked"}},
		{"ctnet's plain error not hidden", plain, ipamErr, 0, []string{"kernel said no", "store locked"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := withIPAMError(tt.err, tt.ipam)
			if (got == nil) != (tt.wantMessage == nil) {
				t.Fatalf("got %v", got)
			}
			if got == nil {
				return
			}
			// What skel prints: the first CNI error in the chain, else the whole text.
			seen, code := got.Error(), uint(0)
			var cniErr *types.Error
			if errors.As(got, &cniErr) {
				seen, code = cniErr.Msg+" "+cniErr.Details, cniErr.Code
			}
			if code != tt.wantCode {
				t.Errorf("the runtime reads code %d, want %d", code, tt.wantCode)
			}
			for _, w := range tt.wantMessage {
				if !strings.Contains(seen, w) {
					t.Errorf("the runtime reads %q, which lacks %q", seen, w)
				}
			}
		})
	}
}

// The bandwidth capability's keys become the library's limits, field by field, and a
// bad one is refused naming its key as the configuration writes it.
func TestBandwidthLimits(t *testing.T) {
	conf, err := parseConf([]byte(`{"name":"n","runtimeConfig":{"bandwidth":{"ingressRate":20000000,"ingressBurst":400000,"egressRate":10000000,"egressBurst":200000}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := network.Bandwidth{IngressRate: 20e6, IngressBurst: 400e3, EgressRate: 10e6, EgressBurst: 200e3}
	if got := conf.limits(); got != want {
		t.Errorf("limits %+v, want %+v", got, want)
	}
	none, err := parseConf([]byte(`{"name":"n"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := none.limits(); !got.IsZero() {
		t.Errorf("limits without the capability: %+v, want none", got)
	}
	bad := &network.FieldError{Field: "Bandwidth.EgressBurst", Err: errors.New("a burst must be given with a rate in the same direction")}
	if got := confText(bad); !strings.Contains(got, "bad runtimeConfig.bandwidth.egressBurst") {
		t.Errorf("confText names the field as %q, want runtimeConfig.bandwidth.egressBurst", got)
	}
}
