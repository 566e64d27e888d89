package fastpath

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/lab"
)

// The program passes the kernel's verifier; a later process finds it, and its maps,
// behind a port's filter; a port is moved from an older program's maps to the new
// one's (never in both); and Detach leaves neither entry nor filter. tc lists the
// filters; the entries are read back through the maps.
func TestAttachFindDetach(t *testing.T) {
	sb, h := sandboxHandle(t)
	// Two dual-stack ports of one bridge, and an IPv6-only port of another.
	ports := []Port{
		{MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, 2}, IP: netip.MustParseAddr("10.0.0.2"), IP6: netip.MustParseAddr("fd00:7::2"), Bridge: 7},
		{MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, 3}, IP: netip.MustParseAddr("10.0.0.3"), IP6: netip.MustParseAddr("fd00:7::3"), Bridge: 7},
		{MAC: net.HardwareAddr{2, 0x42, 10, 0, 1, 2}, IP6: netip.MustParseAddr("fd00:8::2"), Bridge: 8},
	}
	for i, name := range []string{"fpa", "fpb", "fpc"} {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
		if err := h.LinkAdd(veth); err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		ports[i].Index = l.Attrs().Index
	}
	old, err := Load()
	if err != nil {
		t.Fatalf("the kernel refuses the program: %v", err)
	}
	defer old.Close()
	for _, port := range ports {
		if changed, err := old.Attach(h, port); err != nil || !changed {
			t.Fatalf("attach %d: changed %t, %v", port.Index, changed, err)
		}
	}
	if changed, err := old.Attach(h, ports[0]); err != nil || changed {
		t.Errorf("attaching again: changed %t, %v; want nothing to do", changed, err)
	}
	if out, err := sb.Try("tc", "filter", "show", "dev", "fpa", "ingress"); err != nil || !strings.Contains(out, programName) {
		t.Errorf("tc does not list the program on fpa: %v: %s", err, out)
	}
	found, err := Find(h, ports[1].Index)
	if err != nil || found == nil {
		t.Fatalf("Find: %v, %v", found, err)
	}
	oldID, _ := old.ID()
	if id, _ := found.ID(); id != oldID {
		t.Errorf("Find found program %d, want %d", id, oldID)
	}
	found.Close()
	for _, c := range []struct {
		dst   netip.Addr
		proto uint8
		want  bool
	}{
		{ports[1].IP, unix.IPPROTO_ICMP, true},
		{ports[1].IP6, unix.IPPROTO_TCP, true},
		{ports[1].IP6, unix.IPPROTO_UDP, true},
		{ports[1].IP6, unix.IPPROTO_ICMPV6, false}, // neighbour discovery is the bridge's
		{ports[0].IP, unix.IPPROTO_UDP, false},     // not b's address
	} {
		if ok, err := Redirects(h, ports[0].Index, ports[1].Index, c.dst, c.proto); err != nil || ok != c.want {
			t.Errorf("Redirects a → b at %s, protocol %d: %t, %v; want %t", c.dst, c.proto, ok, err, c.want)
		}
	}
	if ok, err := Redirects(h, ports[0].Index, ports[2].Index, ports[2].IP6, unix.IPPROTO_TCP); err != nil || ok {
		t.Errorf("Redirects a → c on another bridge: %t, %v; want false", ok, err)
	}
	for _, port := range ports {
		if got := entry(t, old, port.Index); got.String() != port.String() {
			t.Errorf("the ports map holds %s, want %s", got, port)
		}
	}

	// A newer program takes a port over: its entries leave the old maps.
	next, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if changed, err := next.Attach(h, ports[0]); err != nil || !changed {
		t.Fatalf("move a to the new program: changed %t, %v", changed, err)
	}
	if listed(t, old, ports[0].Index) || !listed(t, next, ports[0].Index) {
		t.Errorf("after the move, a is in the old maps: %t, in the new: %t", listed(t, old, ports[0].Index), listed(t, next, ports[0].Index))
	}
	if ok, _ := Redirects(h, ports[0].Index, ports[1].Index, ports[1].IP, unix.IPPROTO_UDP); ok {
		t.Errorf("a and b run different programs, yet Redirects says a's frames reach b")
	}

	for _, port := range ports {
		if detached, err := Detach(h, port.Index); err != nil || !detached {
			t.Errorf("detach %d: %t, %v", port.Index, detached, err)
		}
	}
	if listed(t, old, ports[1].Index) || listed(t, next, ports[0].Index) {
		t.Errorf("Detach left entries behind")
	}
	if out, _ := sb.Try("tc", "filter", "show", "dev", "fpa", "ingress"); strings.Contains(out, programName) {
		t.Errorf("Detach left the filter on fpa: %s", out)
	}
	if detached, err := Detach(h, ports[0].Index); err != nil || detached {
		t.Errorf("detaching again: %t, %v; want nothing to do", detached, err)
	}
}

// A port of the older, IPv4-only program (its maps' layout, its name) is moved to the
// current one by Attach and taken off by Detach with its entries: a later port that
// gets its address and MAC must not find its peers entry in a program that still runs.
// Until then trace sees the older program's redirects. A filter of ctnet's whose
// program this ctnet does not know (a later one's) is taken off all the same.
func TestOlderProgramTakenOff(t *testing.T) {
	_, h := sandboxHandle(t)
	older := loadOlder(t, olderProgramName)
	defer older.Close()
	current, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	defer current.Close()
	var ports []Port
	for i, name := range []string{"fpold1", "fpold2"} {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		port := Port{Index: l.Attrs().Index, MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, byte(8 + i)}, IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(8 + i)}), Bridge: 7}
		older.enterOlder(t, h, port)
		ports = append(ports, port)
	}
	if ok, err := Redirects(h, ports[0].Index, ports[1].Index, ports[1].IP, unix.IPPROTO_UDP); err != nil || !ok {
		t.Errorf("Redirects between two ports of the older program: %t, %v; want true", ok, err)
	}
	for i, c := range []struct {
		name    string
		takeOff func(Port) error
	}{
		{"detach", func(port Port) error { _, err := Detach(h, port.Index); return err }},
		{"attach to the current program", func(port Port) error { _, err := current.Attach(h, port); return err }},
	} {
		port := ports[i]
		if err := c.takeOff(port); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if older.ports.Lookup(uint32(port.Index), make([]byte, 16)) == nil {
			t.Errorf("%s: the older program's ports entry is left", c.name)
		}
		if older.peers.Lookup(port.peerEntries()[0].key, make([]byte, peerValueSize)) == nil {
			t.Errorf("%s: the older program's peers entry is left", c.name)
		}
		if id, err := attachedID(h, port.Index); err != nil || id == mustID(t, older) {
			t.Errorf("%s: the older program still runs on the port (%v)", c.name, err)
		}
	}

	later := loadOlder(t, "ctnet_peer_v9")
	defer later.Close()
	later.enterOlder(t, h, ports[0])
	if detached, err := Detach(h, ports[0].Index); err != nil || !detached {
		t.Errorf("Detach of a later program's port: %t, %v; want its filter removed", detached, err)
	}
	if id, err := attachedID(h, ports[0].Index); err != nil || id != 0 {
		t.Errorf("a later program still runs on the port after Detach (%v)", err)
	}
}

// loadOlder loads a program under name with the older maps, as the first ctnet that
// had a fast path did (what it runs does not matter here: it passes all).
func loadOlder(t *testing.T, name string) *Path {
	t.Helper()
	ports, err := newMap(portsName, 4, 16)
	if err != nil {
		t.Fatal(err)
	}
	peers, err := newMap(peersName, peerKeySize, peerValueSize)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: name, Type: ebpf.SchedCLS, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{
			asm.LoadMapPtr(asm.R1, ports.FD()),
			asm.LoadMapPtr(asm.R1, peers.FD()),
			asm.Mov.Imm(asm.R0, actContinue),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &Path{prog: prog, ports: ports, peers: peers}
}

// enterOlder puts port on the older program as it did: filter, then its 16-byte
// ports entry and its peers entry.
func (p *Path) enterOlder(t *testing.T, h *netlink.Handle, port Port) {
	t.Helper()
	clsact := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: port.Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := h.QdiscReplace(clsact); err != nil {
		t.Fatal(err)
	}
	if err := h.FilterReplace(ingressFilter(port.Index, p.prog.FD())); err != nil {
		t.Fatal(err)
	}
	value := portValue(port)[:16]
	value[portFamilies] = 0
	if err := p.ports.Put(uint32(port.Index), value); err != nil {
		t.Fatal(err)
	}
	if err := p.peers.Put(port.peerEntries()[0].key, peerValue(port)); err != nil {
		t.Fatal(err)
	}
}

func mustID(t *testing.T, p *Path) int {
	t.Helper()
	id, err := p.ID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// sandboxHandle is a netlink handle in a sandbox namespace of the test's own.
func sandboxHandle(t *testing.T) (*lab.Sandbox, *netlink.Handle) {
	t.Helper()
	lab.RequireRoot(t)
	sb := lab.NewSandbox(t)
	h, err := sb.NS(t).Netlink()
	if err != nil {
		t.Fatal(err)
	}
	return sb, h
}

func listed(t *testing.T, p *Path, index int) bool {
	t.Helper()
	return entry(t, p, index).Index == index
}

// entry is index's port as the maps list it, or the zero Port.
func entry(t *testing.T, p *Path, index int) Port {
	t.Helper()
	ports, err := p.Ports()
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range ports {
		if port.Index == index {
			return port
		}
	}
	return Port{}
}

func (port Port) String() string {
	return fmt.Sprintf("link %d %s %s %s bridge %d", port.Index, port.MAC, port.IP, port.IP6, port.Bridge)
}

// BenchmarkLoad is what the first container of a host namespace pays for the fast
// path: three maps and the program through the verifier and the JIT.
func BenchmarkLoad(b *testing.B) {
	lab.RequireRoot(b)
	for b.Loop() {
		p, err := Load()
		if err != nil {
			b.Fatal(err)
		}
		p.Close()
	}
}

// TestProgramVerdicts runs the program itself (BPF_PROG_TEST_RUN, in a sandbox of the
// test's own, loopback as the source port) on frames a container could send: it
// redirects only what the bridge table would accept and the bridge would deliver to
// that one port, and leaves the rest to the bridge. The e2e fast path test sends
// such frames between real containers; this one reaches the cases it cannot cheaply
// make: single-family ports, frames of the shortest length the program reads. (The
// kernel runs no IPv4 or IPv6 frame shorter than its header through a program here,
// so frames cut shorter than the program's bounds checks cannot be tried.)
func TestProgramVerdicts(t *testing.T) {
	sb, _ := sandboxHandle(t)
	const source = 1 // lo, the only interface of a new namespace
	a := Port{Index: source, MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, 2}, IP: netip.MustParseAddr("10.0.0.2"), IP6: netip.MustParseAddr("fd00:7::2"), Bridge: 7}
	b := Port{Index: 100, MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, 3}, IP: netip.MustParseAddr("10.0.0.3"), IP6: netip.MustParseAddr("fd00:7::3"), Bridge: 7}
	other := Port{Index: 101, MAC: net.HardwareAddr{2, 0x42, 10, 0, 1, 3}, IP: netip.MustParseAddr("10.0.1.3"), IP6: netip.MustParseAddr("fd00:8::3"), Bridge: 8}
	v4only := Port{Index: source, MAC: a.MAC, IP: a.IP, Bridge: 7}
	v6only := Port{Index: source, MAC: a.MAC, IP6: a.IP6, Bridge: 7}
	datagram := make([]byte, 8)
	frame4 := func(src Port, dst Port) []byte { return ether(dst.MAC, src.MAC, 0x0800, ipv4(src.IP, dst.IP)) }
	frame6 := func(src Port, dst Port, next byte) []byte {
		return ether(dst.MAC, src.MAC, 0x86dd, ipv6(src.IP6, dst.IP6, next, datagram))
	}
	const redirect, bridge = 7, -1 // TC_ACT_REDIRECT, TC_ACT_UNSPEC
	cases := []struct {
		name   string
		source Port // its ports entry
		frame  []byte
		want   int32
	}{
		{"IPv4", a, frame4(a, b), redirect},
		{"IPv6 UDP", a, frame6(a, b, unix.IPPROTO_UDP), redirect},
		{"IPv6 TCP", a, frame6(a, b, unix.IPPROTO_TCP), redirect},
		{"IPv6 headers alone", a, ether(b.MAC, a.MAC, 0x86dd, ipv6(a.IP6, b.IP6, unix.IPPROTO_UDP, nil)), redirect},
		{"IPv4 from an IPv4-only port", v4only, frame4(a, b), redirect},
		{"IPv6 from an IPv6-only port", v6only, frame6(a, b, unix.IPPROTO_UDP), redirect},
		{"ICMPv6", a, frame6(a, b, unix.IPPROTO_ICMPV6), bridge},
		{"IPv6 hop-by-hop header", a, frame6(a, b, unix.IPPROTO_HOPOPTS), bridge},
		{"IPv6 fragment header", a, frame6(a, b, unix.IPPROTO_FRAGMENT), bridge},
		{"IPv6 from a link-local address", a, ether(b.MAC, a.MAC, 0x86dd, ipv6(netip.MustParseAddr("fe80::2"), b.IP6, unix.IPPROTO_UDP, datagram)), bridge},
		{"IPv6 from another address", a, ether(b.MAC, a.MAC, 0x86dd, ipv6(netip.MustParseAddr("fd00:7::99"), b.IP6, unix.IPPROTO_UDP, datagram)), bridge},
		{"IPv4 from another address", a, ether(b.MAC, a.MAC, 0x0800, ipv4(netip.MustParseAddr("10.0.0.99"), b.IP)), bridge},
		{"another source MAC", a, ether(b.MAC, net.HardwareAddr{2, 0x42, 10, 0, 0, 99}, 0x86dd, ipv6(a.IP6, b.IP6, unix.IPPROTO_UDP, datagram)), bridge},
		{"to another MAC", a, ether(net.HardwareAddr{2, 0x42, 10, 0, 0, 1}, a.MAC, 0x86dd, ipv6(a.IP6, b.IP6, unix.IPPROTO_UDP, datagram)), bridge},
		{"IPv6 multicast", a, ether(b.MAC, a.MAC, 0x86dd, ipv6(a.IP6, netip.MustParseAddr("ff02::1"), unix.IPPROTO_UDP, datagram)), bridge},
		{"IPv6 to another bridge's port", a, frame6(a, other, unix.IPPROTO_UDP), bridge},
		{"IPv4 to another bridge's port", a, frame4(a, other), bridge},
		{"IPv6 under IPv4's EtherType", a, ether(b.MAC, a.MAC, 0x0800, ipv6(a.IP6, b.IP6, unix.IPPROTO_UDP, datagram)), bridge},
		{"a VLAN tag in the frame", a, ether(b.MAC, a.MAC, 0x8100, append([]byte{0, 5, 0x08, 0}, ipv4(a.IP, b.IP)...)), bridge},
		{"ARP", a, ether(b.MAC, a.MAC, 0x0806, make([]byte, 28)), bridge},
		{"IPv4 from an IPv6-only port's zero address", v6only, ether(b.MAC, a.MAC, 0x0800, ipv4(netip.IPv4Unspecified(), b.IP)), bridge},
		{"IPv6 from an IPv4-only port's zero address", v4only, ether(b.MAC, a.MAC, 0x86dd, ipv6(netip.IPv6Unspecified(), b.IP6, unix.IPPROTO_UDP, datagram)), bridge},
	}
	err := sb.NS(t).Do(func() error {
		p, err := Load()
		if err != nil {
			return err
		}
		defer p.Close()
		for _, port := range []Port{b, other} {
			enter(t, p, port)
		}
		for _, c := range cases {
			enter(t, p, c.source)
			skb := make([]byte, 44) // struct __sk_buff up to ifindex
			binary.NativeEndian.PutUint32(skb[skbIfindex:], source)
			got, err := p.prog.Run(&ebpf.RunOptions{Data: c.frame, Context: skb})
			if err != nil {
				t.Errorf("%s: run the program: %v", c.name, err)
				continue
			}
			if int32(got) != c.want {
				t.Errorf("%s: verdict %d, want %d (7 redirects past the bridge, -1 leaves the frame to it)", c.name, int32(got), c.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// enter puts port's entries in p's maps as Attach does, without a filter.
func enter(t *testing.T, p *Path, port Port) {
	t.Helper()
	if err := p.ports.Put(uint32(port.Index), portValue(port)); err != nil {
		t.Fatal(err)
	}
	for _, e := range port.peerEntries() {
		if err := e.m(p).Put(e.key, peerValue(port)); err != nil {
			t.Fatal(err)
		}
	}
}

func ether(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	frame := binary.BigEndian.AppendUint16(append(slices.Clone(dst), src...), etherType)
	return append(frame, payload...)
}

// ipv4 is an IPv4 header and an empty UDP datagram.
func ipv4(src, dst netip.Addr) []byte {
	h := make([]byte, 20, 28)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], 28)
	h[8], h[9] = 64, unix.IPPROTO_UDP
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(h, make([]byte, 8)...)
}

func ipv6(src, dst netip.Addr, next byte, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
}
