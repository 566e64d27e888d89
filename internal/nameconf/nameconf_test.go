package nameconf

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func write(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadResolvConf(t *testing.T) {
	got, err := ReadResolvConf(write(t, "# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver  ::ffff:198.51.100.53\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Resolver{
		Nameservers: addrs("192.0.2.53", "198.51.100.53", "fe80::1%eth0"),
		Other:       []string{"search example.org", "options ndots:2"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got, err := ReadResolvConf(filepath.Join(t.TempDir(), "missing")); err != nil || len(got.Nameservers) != 0 {
		t.Errorf("missing file: got %+v, %v; want an empty configuration", got, err)
	}
}

func TestForContainer(t *testing.T) {
	const missing = "/nonexistent/resolv.conf"
	tests := []struct {
		name           string
		dns            []netip.Addr
		host, upstream string // file contents; "" is no file
		want           []netip.Addr
	}{
		{"the host's reachable resolvers", nil, "nameserver 192.0.2.1\nnameserver 127.0.0.1\nnameserver 192.0.2.2\n", "", addrs("192.0.2.1", "192.0.2.2")},
		{"not the host's IPv6 link-local ones", nil, "nameserver fe80::1%uplink0\nnameserver 2001:db8::53\nnameserver 169.254.169.253\n", "", addrs("2001:db8::53", "169.254.169.253")},
		{"a link-local resolver alone: what systemd-resolved forwards to", nil, "nameserver fe80::1%uplink0\n", "nameserver 192.0.2.7\n", addrs("192.0.2.7")},
		{"--dns wins over the host's", addrs("198.51.100.9"), "nameserver 192.0.2.1\n", "", addrs("198.51.100.9")},
		{"a loopback stub: what it forwards to", nil, "nameserver 127.0.0.53\n", "nameserver 192.0.2.7\n", addrs("192.0.2.7")},
		{"a loopback stub and nothing known behind it", nil, "nameserver 127.0.0.53\n", "", FallbackNameservers},
		{"a loopback stub behind a loopback stub", nil, "nameserver ::1\n", "nameserver 127.0.0.1\n", FallbackNameservers},
		{"no resolvers at all", nil, "# none\n", "nameserver 192.0.2.7\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, upstream := missing, missing
			if tt.host != "" {
				host = write(t, tt.host+"search example.org\n")
			}
			if tt.upstream != "" {
				upstream = write(t, tt.upstream)
			}
			r, err := ForContainer(tt.dns, host, upstream)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Nameservers, tt.want) {
				t.Errorf("nameservers %v, want %v", r.Nameservers, tt.want)
			}
			if !reflect.DeepEqual(r.Other, []string{"search example.org"}) {
				t.Errorf("search and options %q, want the host's", r.Other)
			}
		})
	}
}

func TestRender(t *testing.T) {
	got := string(Resolver{Nameservers: addrs("192.0.2.1", "2001:db8::1"), Other: []string{"options ndots:2"}}.Render())
	for _, want := range []string{"\nnameserver 192.0.2.1\n", "\nnameserver 2001:db8::1\n", "\noptions ndots:2\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, got)
		}
	}
	hosts := string(Hosts("web", addrs("172.17.0.2"), []Host{{"db.internal", netip.MustParseAddr("192.0.2.5")}}))
	for _, want := range []string{"127.0.0.1\tlocalhost\n", "192.0.2.5\tdb.internal\n", "172.17.0.2\tweb\n"} {
		if !strings.Contains(hosts, want) {
			t.Errorf("hosts lacks %q:\n%s", want, hosts)
		}
	}
}
