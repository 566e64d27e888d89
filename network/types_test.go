package network

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/store"
)

// The CLI's --format json prints these types, and scripts read them: their keys and
// shapes are pinned here, and must equal what the store's records gave before the
// API had types of its own.
func TestViewJSON(t *testing.T) {
	created := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	c := &store.Container{
		ID: id, Name: "web", Created: created, Mode: store.ModeBridge,
		NetNS: "/run/ctnet/netns/" + id, OwnsNetNS: true, Hostname: "web.local", Aliases: []string{"www"},
		Command: []string{"sleep", "600"},
		Attachments: []store.Attachment{{Network: "backend", NetworkID: id, IfName: "eth0", HostVeth: "vc01234567",
			IP: netip.MustParseAddr("172.18.0.5"), PrefixLen: 16, Gateway: netip.MustParseAddr("172.18.0.1"), MAC: "02:42:ac:12:00:05"}},
		Ports: []store.Port{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8080, ContainerPort: 80, Proto: "tcp",
			ContainerIP: netip.MustParseAddr("172.18.0.5")}},
		Detach: true, State: store.StateRunning,
		Process:    proc.ID{PID: 42, StartTime: 7, BootID: "b"},
		Supervisor: proc.ID{PID: 41, StartTime: 6, BootID: "b"},
		ExitCode:   -1, RuntimeDir: "/run/ctnet/containers/0123456789ab",
		EmbeddedDNS: true, Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")},
	}
	wantContainer := `{"id":"` + id + `","name":"web","created":"2024-05-01T12:00:00Z","mode":"bridge",` +
		`"netns":"/run/ctnet/netns/` + id + `","owns_netns":true,"hostname":"web.local","aliases":["www"],` +
		`"command":["sleep","600"],"networks":[{"network":"backend","network_id":"` + id + `","interface":"eth0",` +
		`"host_veth":"vc01234567","ip":"172.18.0.5","prefix_len":16,"gateway":"172.18.0.1","mac":"02:42:ac:12:00:05"}],` +
		`"ports":[{"host_ip":"127.0.0.1","host_port":8080,"container_port":80,"proto":"tcp","container_ip":"172.18.0.5"}],` +
		`"attached":false,"detach":true,"auto_remove":false,"state":"running",` +
		`"process":{"pid":42,"start_time":7,"boot_id":"b"},"supervisor":{"pid":41,"start_time":6,"boot_id":"b"},` +
		`"exit_code":-1,"runtime_dir":"/run/ctnet/containers/0123456789ab","embedded_dns":true,"resolvers":["192.0.2.53:53"]}`
	rootless := &store.Container{ID: id, Name: "u", Created: created, Mode: store.ModeUserNet, Ports: []store.Port{},
		Attachments: []store.Attachment{}, State: store.StateExited, ExitCode: 3, Finished: created.Add(time.Minute),
		UserNet: &store.UserNet{Subnet: netip.MustParsePrefix("10.0.2.0/24"), MTU: 65520}}
	wantRootless := `{"id":"` + id + `","name":"u","created":"2024-05-01T12:00:00Z","mode":"usernet","owns_netns":false,` +
		`"networks":[],"ports":[],"attached":false,"detach":false,"auto_remove":false,"state":"exited",` +
		`"process":{},"supervisor":{},"exit_code":3,"finished":"2024-05-01T12:01:00Z",` +
		`"usernet":{"subnet":"10.0.2.0/24","mtu":65520,"allow_host_loopback":false,"ip":"10.0.2.100","gateway":"10.0.2.2","ip6":"fd00::100","gateway6":"fd00::2"}}`
	n := &store.Network{ID: id, Name: "backend", Driver: "bridge", Bridge: "ct-0123456789ab",
		Subnet: netip.MustParsePrefix("172.18.0.0/16"), Gateway: netip.MustParseAddr("172.18.0.1"), MTU: 1500,
		Masquerade: true, Labels: map[string]string{"team": "a"}, Created: created}
	wantNetwork := `{"id":"` + id + `","name":"backend","driver":"bridge","bridge":"ct-0123456789ab",` +
		`"subnet":"172.18.0.0/16","gateway":"172.18.0.1","mtu":1500,"internal":false,"masquerade":true,` +
		`"labels":{"team":"a"},"created":"2024-05-01T12:00:00Z"}`
	six := &store.Network{ID: id, Name: "six", Driver: "bridge", Bridge: "ct-0123456789ab",
		Subnet6: netip.MustParsePrefix("fd00::/64"), Gateway6: netip.MustParseAddr("fd00::1"), MTU: 1500, Masquerade: true, Created: created}
	wantSix := `{"id":"` + id + `","name":"six","driver":"bridge","bridge":"ct-0123456789ab",` +
		`"subnet":"","gateway":"","subnet6":"fd00::/64","gateway6":"fd00::1","mtu":1500,"internal":false,"masquerade":true,` +
		`"created":"2024-05-01T12:00:00Z"}`
	dual := store.Attachment{Network: "dual", NetworkID: id, IfName: "eth0", HostVeth: "vc01234567",
		IP: netip.MustParseAddr("172.18.0.5"), PrefixLen: 16, Gateway: netip.MustParseAddr("172.18.0.1"), MAC: "02:42:ac:12:00:05",
		IP6: netip.MustParseAddr("fd00::5"), PrefixLen6: 64, Gateway6: netip.MustParseAddr("fd00::1")}
	wantDual := `{"network":"dual","network_id":"` + id + `","interface":"eth0","host_veth":"vc01234567",` +
		`"ip":"172.18.0.5","prefix_len":16,"gateway":"172.18.0.1","mac":"02:42:ac:12:00:05","ip6":"fd00::5","prefix_len6":64,"gateway6":"fd00::1"}`
	tests := []struct {
		name       string
		view, want any
		pinned     string
	}{
		{"IPv6-only network", networkView(six), six, wantSix},
		{"dual-stack attachment", Attachment(dual), dual, wantDual},
		{"container", containerView(c), c, wantContainer},
		// The view adds the user-mode network's addresses, which the record derives.
		{"rootless exited container", containerView(rootless), nil, wantRootless},
		{"network", networkView(n), n, wantNetwork},
		{"ports", containerView(c).Ports, c.Ports, `[{"host_ip":"127.0.0.1","host_port":8080,"container_port":80,"proto":"tcp","container_ip":"172.18.0.5"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.view)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.pinned {
				t.Errorf("JSON changed:\n got %s\nwant %s", got, tt.pinned)
			}
			if tt.want == nil {
				return
			}
			record, err := json.Marshal(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(record) {
				t.Errorf("JSON differs from the store record's:\n view   %s\n record %s", got, record)
			}
		})
	}
}

func TestModeText(t *testing.T) {
	tests := []struct {
		text string
		mode Mode
	}{
		{"", Mode{}},
		{"host", Mode{Kind: ModeHost}},
		{"none", Mode{Kind: ModeNone}},
		{"usernet", Mode{Kind: ModeUserNet}},
		{"container:db", Mode{Kind: ModeContainer, Container: "db"}},
		{"backend", OnNetwork("backend")},
		{"bridge", OnNetwork(DefaultNetwork)},
	}
	for _, tt := range tests {
		if got := ParseMode(tt.text); got != tt.mode {
			t.Errorf("ParseMode(%q) = %+v, want %+v", tt.text, got, tt.mode)
		}
		if got := tt.mode.String(); got != tt.text {
			t.Errorf("%+v.String() = %q, want %q", tt.mode, got, tt.text)
		}
	}
}

// A container's resolv.conf lists only resolvers of the families it has an address
// of; with none of those left, Docker's fallbacks of its families.
func TestReachableFamilies(t *testing.T) {
	a := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, x := range s {
			out = append(out, netip.MustParseAddr(x))
		}
		return out
	}
	v4, v6, dual := a("172.18.0.2"), a("fd00::2"), a("172.18.0.2", "fd00::2")
	for _, tt := range []struct {
		name           string
		servers, addrs []netip.Addr
		want           []netip.Addr
	}{
		{"IPv4 container", a("192.0.2.1", "2001:db8::1"), v4, a("192.0.2.1")},
		{"dual-stack container", a("192.0.2.1", "2001:db8::1"), dual, a("192.0.2.1", "2001:db8::1")},
		{"IPv6-only container", a("192.0.2.1", "2001:db8::1"), v6, a("2001:db8::1")},
		{"IPv4 container, IPv6 resolvers only", a("2001:db8::1"), v4, a("8.8.8.8", "8.8.4.4")},
		{"IPv6-only container, IPv4 resolvers only", a("192.0.2.1"), v6, a("2001:4860:4860::8888", "2001:4860:4860::8844")},
		{"no resolvers", nil, v4, nil},
	} {
		if got := reachableFamilies(tt.servers, tt.addrs); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
