package fastpath

import (
	"fmt"
	"net"
	"net/netip"
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
func TestOlderProgramTakenOff(t *testing.T) {
	_, h := sandboxHandle(t)
	older := loadOlder(t)
	defer older.Close()
	current, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	defer current.Close()
	for _, c := range []struct {
		name    string
		takeOff func(Port) error
	}{
		{"detach", func(port Port) error { _, err := Detach(h, port.Index); return err }},
		{"attach to the current program", func(port Port) error { _, err := current.Attach(h, port); return err }},
	} {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fpold"}, PeerName: "fpoldp"}); err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName("fpold")
		if err != nil {
			t.Fatal(err)
		}
		port := Port{Index: l.Attrs().Index, MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, 9}, IP: netip.MustParseAddr("10.0.0.9"), Bridge: 7}
		older.enterOlder(t, h, port)
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
		if err := h.LinkDel(l); err != nil {
			t.Fatal(err)
		}
	}
}

// loadOlder loads a program under the older name with the older maps, as the first
// ctnet that had a fast path did (what it ran does not matter here: it passes all).
func loadOlder(t *testing.T) *Path {
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
		Name: olderProgramName, Type: ebpf.SchedCLS, License: "Dual MIT/GPL",
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
