package firewall

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// representative is a state with one of everything: a masquerading network, an
// internal one whose containers cannot reach each other, one that neither masquerades
// nor is internal, endpoints on them, and ports published on every address and on one
// address, over each protocol.
func representative() State {
	a := netip.MustParseAddr
	return State{
		Owner: "/var/lib/ctnet",
		Networks: []Network{
			{Bridge: "ctnet0", Subnet: netip.MustParsePrefix("172.17.0.0/16"), Masquerade: true,
				NonMasquerade: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("192.0.2.0/24")}},
			{Bridge: "ct-0123456789ab", Subnet: netip.MustParsePrefix("172.18.0.0/16"), Internal: true, NoICC: true},
			{Bridge: "ct-routed", Subnet: netip.MustParsePrefix("192.168.16.0/20")},
			{Bridge: "ct-dual", Subnet: netip.MustParsePrefix("172.19.0.0/16"), Subnet6: netip.MustParsePrefix("fd63:746e:7400::/64"), Masquerade: true},
			{Bridge: "ct-v6routed", Subnet6: netip.MustParsePrefix("2001:db8:1::/64")},
		},
		Endpoints: []Endpoint{
			{HostVeth: "vc0badf00d", MAC: mac("02:42:ac:11:00:02"), IP: a("172.17.0.2")},
			{HostVeth: "vc1234abcd-1", MAC: mac("02:42:ac:12:00:05"), IP: a("172.18.0.5"), NoICC: true},
			{HostVeth: "vcdua1dua1", MAC: mac("02:42:ac:13:00:02"), IP: a("172.19.0.2"), IP6: a("fd63:746e:7400::2")},
			{HostVeth: "vc6666aaaa", MAC: mac("02:43:01:02:03:04"), IP6: a("2001:db8:1::2")},
		},
		Ports: []Port{
			{Proto: "tcp", HostPort: 8080, ContainerIP: a("172.17.0.2"), ContainerPort: 80},
			{Proto: "udp", HostIP: a("0.0.0.0"), HostPort: 5353, ContainerIP: a("172.17.0.2"), ContainerPort: 53},
			{Proto: "tcp", HostIP: a("127.0.0.1"), HostPort: 8443, ContainerIP: a("172.17.0.2"), ContainerPort: 443},
			{Proto: "sctp", HostIP: a("10.0.0.1"), HostPort: 9, ContainerIP: a("172.17.0.2"), ContainerPort: 9},
			{Proto: "tcp", HostPort: 8080, ContainerIP: a("fd63:746e:7400::2"), ContainerPort: 80, HostIP: a("::")},
			{Proto: "udp", HostIP: a("2001:db8::5"), HostPort: 5353, ContainerIP: a("2001:db8:1::2"), ContainerPort: 53},
		},
	}
}

func TestRenderGolden(t *testing.T) {
	got := Render(representative())
	path := filepath.Join("testdata", "render.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./firewall -run TestRenderGolden -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("Render differs from %s (if the change is meant, rerun with -update and review the diff):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff lists the lines that differ, enough to see what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n\twant: %s\n\tgot:  %s\n", i+1, wl, gl)
		}
	}
	return b.String()
}

func TestRenderIgnoresInputOrder(t *testing.T) {
	s := representative()
	want := Render(s)
	slices.Reverse(s.Networks)
	slices.Reverse(s.Endpoints)
	slices.Reverse(s.Ports)
	if got := Render(s); got != want {
		t.Errorf("Render depends on the order of the state:\n%s", lineDiff(want, got))
	}
}

func TestRenderEmptyStateHasTablesWithoutElements(t *testing.T) {
	out := Render(State{})
	if strings.Contains(out, "elements") {
		t.Errorf("Render(empty) lists elements:\n%s", out)
	}
	for _, want := range []string{"table inet ctnet {", "table bridge ctnet {", "set bridges {", "map ports_any {", "chain forward {"} {
		if !strings.Contains(out, want) {
			t.Errorf("Render(empty) lacks %q", want)
		}
	}
}

func allSpecs() map[string][]setSpec {
	return map[string][]setSpec{"inet": inetSets, "bridge": bridgeSets}
}

// TestElementsMatchSetTypes checks every element against its set's declared key and
// data types: the kernel refuses an element of the wrong length.
func TestElementsMatchSetTypes(t *testing.T) {
	els, err := representative().elements()
	if err != nil {
		t.Fatal(err)
	}
	byFamily := map[string]map[string][]nftables.SetElement{"inet": els.inet, "bridge": els.bridge}
	for fam, specs := range allSpecs() {
		for _, spec := range specs {
			list := byFamily[fam][spec.name]
			if len(list) == 0 {
				t.Errorf("set %s %s: no elements from the representative state", fam, spec.name)
			}
			for _, e := range list {
				if want := int(spec.keyType().Bytes); len(e.Key) != want {
					t.Errorf("set %s %s: key %x has %d bytes, want %d", fam, spec.name, e.Key, len(e.Key), want)
				}
				if spec.interval && len(e.KeyEnd) != len(e.Key) {
					t.Errorf("set %s %s: interval end %x does not match key %x", fam, spec.name, e.KeyEnd, e.Key)
				}
				if spec.data != nil {
					if want := int(concat(spec.data).Bytes); len(e.Val) != want {
						t.Errorf("map %s %s: value %x has %d bytes, want %d", fam, spec.name, e.Val, len(e.Val), want)
					}
				}
			}
		}
	}
}

func TestElementsEncoding(t *testing.T) {
	a := netip.MustParseAddr
	s := State{
		Networks:  []Network{{Bridge: "br0", Subnet: netip.MustParsePrefix("10.1.0.0/16"), Masquerade: true}},
		Endpoints: []Endpoint{{HostVeth: "vc1", MAC: mac("02:00:00:00:00:01"), IP: a("10.1.0.2")}},
		Ports: []Port{
			{Proto: "tcp", HostPort: 8080, ContainerIP: a("10.1.0.2"), ContainerPort: 80},
			{Proto: "udp", HostIP: a("127.0.0.1"), HostPort: 53, ContainerIP: a("10.1.0.2"), ContainerPort: 5353},
		},
	}
	els, err := s.elements()
	if err != nil {
		t.Fatal(err)
	}
	br0 := append([]byte("br0"), make([]byte, 13)...)
	vc1 := append([]byte("vc1"), make([]byte, 13)...)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		what string
		got  nftables.SetElement
		want nftables.SetElement
	}{
		{"bridge name, NUL-padded to IFNAMSIZ", els.inet[setBridges][0], nftables.SetElement{Key: br0}},
		{"subnet interval: first and last address, each with the bridge",
			els.inet[setSubnets][0], nftables.SetElement{Key: cat([]byte{10, 1, 0, 0}, br0), KeyEnd: cat([]byte{10, 1, 255, 255}, br0)}},
		// Concatenated components are padded to 32-bit registers; numbers are big-endian.
		{"port on every address: proto . port → address . port",
			els.inet[mapPortsAny][0], nftables.SetElement{Key: []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, Val: []byte{10, 1, 0, 2, 0, 80, 0, 0}}},
		{"port on one address: address . proto . port",
			els.inet[mapPorts][0], nftables.SetElement{Key: []byte{127, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0}, Val: []byte{10, 1, 0, 2, 0x14, 0xe9, 0, 0}}},
		{"bridge port . MAC, the MAC padded", els.bridge[setPortMACs][0], nftables.SetElement{Key: cat(vc1, []byte{2, 0, 0, 0, 0, 1, 0, 0})}},
		{"bridge port . address", els.bridge[setPortIPs][0], nftables.SetElement{Key: cat(vc1, []byte{10, 1, 0, 2})}},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got.Key, tt.want.Key) || !bytes.Equal(tt.got.KeyEnd, tt.want.KeyEnd) || !bytes.Equal(tt.got.Val, tt.want.Val) {
			t.Errorf("%s:\n got key %x end %x val %x\nwant key %x end %x val %x", tt.what,
				tt.got.Key, tt.got.KeyEnd, tt.got.Val, tt.want.Key, tt.want.KeyEnd, tt.want.Val)
		}
	}
	if len(els.inet[setInternal]) != 0 || len(els.inet[setNATBridges]) != 1 || len(els.inet[setMasqSubnets]) != 1 {
		t.Errorf("a masquerading network: internal %d, nat_bridges %d, masq_subnets %d elements; want 0, 1, 1",
			len(els.inet[setInternal]), len(els.inet[setNATBridges]), len(els.inet[setMasqSubnets]))
	}
}

func TestElementsRefuseWhatTheKernelCannotHold(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name string
		s    State
	}{
		{"unknown protocol", State{Ports: []Port{{Proto: "icmp", HostPort: 1, ContainerIP: a("10.0.0.2"), ContainerPort: 1}}}},
		{"IPv4 host address, IPv6 container address", State{Ports: []Port{{Proto: "tcp", HostIP: a("10.0.0.1"), HostPort: 1, ContainerIP: a("fd00::2"), ContainerPort: 1}}}},
		{"IPv4-mapped container address", State{Ports: []Port{{Proto: "tcp", HostPort: 1, ContainerIP: a("::ffff:10.0.0.2"), ContainerPort: 1}}}},
		{"endpoint with an IPv4 address as its IPv6 one", State{Endpoints: []Endpoint{{HostVeth: "vc1", MAC: mac("02:00:00:00:00:01"), IP6: a("10.0.0.2")}}}},
		{"network without a subnet", State{Networks: []Network{{Bridge: "ct-x"}}}},
		{"no container address", State{Ports: []Port{{Proto: "tcp", HostPort: 1, ContainerPort: 1}}}},
		{"IPv6 host address", State{Ports: []Port{{Proto: "tcp", HostIP: a("::1"), HostPort: 1, ContainerIP: a("10.0.0.2"), ContainerPort: 1}}}},
		{"endpoint without MAC", State{Endpoints: []Endpoint{{HostVeth: "vc1", IP: a("10.0.0.2")}}}},
		{"endpoint with a 20-byte hardware address", State{Endpoints: []Endpoint{{HostVeth: "vc1", MAC: make(net.HardwareAddr, 20), IP: a("10.0.0.2")}}}},
		{"endpoint with an IPv6 address", State{Endpoints: []Endpoint{{HostVeth: "vc1", MAC: mac("02:00:00:00:00:01"), IP: a("fd00::2")}}}},
	}
	for _, tt := range tests {
		if _, err := tt.s.elements(); err == nil {
			t.Errorf("%s: elements() accepted %+v", tt.name, tt.s)
		} else if strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("%s: error spans lines: %q", tt.name, err)
		}
	}
}

// TestDescribeMatchesRender checks that elements read back from the kernel (Diff,
// List) are printed as Render prints them, so `ctnet doctor` output can be compared
// with the rendered tables; interval sets print as first - last.
func TestDescribeMatchesRender(t *testing.T) {
	s := representative().Sorted()
	els, err := s.elements()
	if err != nil {
		t.Fatal(err)
	}
	rendered := map[string]map[string][]string{"inet": inetElements(s), "bridge": bridgeElements(s)}
	byFamily := map[string]map[string][]nftables.SetElement{"inet": els.inet, "bridge": els.bridge}
	for fam, specs := range allSpecs() {
		for _, spec := range specs {
			var described []string
			for _, e := range byFamily[fam][spec.name] {
				d := describe(spec, e)
				if strings.ContainsAny(d, "\n\r") {
					t.Errorf("set %s %s: described element spans lines: %q", fam, spec.name, d)
				}
				described = append(described, d)
			}
			if spec.interval {
				continue
			}
			want := slices.Clone(rendered[fam][spec.name])
			slices.Sort(want)
			slices.Sort(described)
			if !slices.Equal(described, want) {
				t.Errorf("set %s %s: described %q, rendered %q", fam, spec.name, described, want)
			}
		}
	}
	subnets := inetSets[slices.IndexFunc(inetSets, func(s setSpec) bool { return s.name == setSubnets })]
	got := describe(subnets, els.inet[setSubnets][0])
	if want := `172.18.0.0 . "ct-0123456789ab" - 172.18.255.255 . "ct-0123456789ab"`; got != want {
		t.Errorf("describe(subnet interval) = %q, want %q", got, want)
	}
}

// FuzzDescribe feeds describe element bytes of any length, as a table changed by
// another tool could hold: it must print them on one line, never index past them, and
// tell apart any two elements that differ in a byte it shows (a gc report line names
// the one element it removed).
func FuzzDescribe(f *testing.F) {
	f.Add(uint8(0), []byte("ctnet0"), []byte{}, []byte{})
	f.Add(uint8(6), []byte{6, 0, 0, 0, 0x1f}, []byte{}, []byte{10, 0})
	f.Add(uint8(7), []byte{127, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0}, []byte{1}, []byte{10, 1, 0, 2, 0x14, 0xe9, 0, 0})
	f.Fuzz(func(t *testing.T, which uint8, key, keyEnd, val []byte) {
		specs := append(slices.Clone(inetSets), bridgeSets...)
		spec := specs[int(which)%len(specs)]
		el := nftables.SetElement{Key: key, KeyEnd: keyEnd, Val: val}
		d := describe(spec, el)
		if strings.ContainsAny(d, "\n\r") {
			t.Fatalf("describe(%s, %x) spans lines: %q", spec.name, key, d)
		}
		fields := []*[]byte{&el.Key, &el.KeyEnd}
		if spec.data != nil {
			fields = append(fields, &el.Val)
		}
		for fi, field := range fields {
			types := spec.key
			if fi == 2 {
				types = spec.data
			}
			orig := *field
			for _, i := range shownBytes(types, orig) {
				changed := slices.Clone(orig)
				changed[i] ^= 1
				*field = changed
				if other := describe(spec, el); other == d {
					t.Errorf("describe(%s) gives %q both for %x and %x", spec.name, d, orig, changed)
				}
			}
			*field = orig
		}
	})
}

// shownBytes are the positions of b that describe shows for a value of these types:
// each field's bytes, and the rest of a value too short for its field; not the padding
// of a field in a concatenation, nor bytes past the last field.
func shownBytes(types []nftables.SetDatatype, b []byte) []int {
	var out []int
	off := 0
	for _, t := range types {
		size := int(t.Bytes)
		if off+size > len(b) {
			size = len(b) - off
		}
		for i := off; i < off+size; i++ {
			out = append(out, i)
		}
		if len(types) > 1 {
			size += (4 - size%4) % 4
		}
		off += size
		if off >= len(b) {
			break
		}
	}
	return out
}
