package fastpath

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/netns"
)

// The program passes the kernel's verifier; a later process finds it, and its maps,
// behind a port's filter; a port is moved from an older program's maps to the new
// one's (never in both); and Detach leaves neither entry nor filter. tc lists the
// filters; the entries are read back through the maps.
func TestAttachFindDetach(t *testing.T) {
	lab.RequireRoot(t)
	sb := lab.NewSandbox(t)
	ns, err := netns.Open(sb.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
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
