package fastpath

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

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
	var ports []Port
	for i, name := range []string{"fpa", "fpb"} {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
		if err := h.LinkAdd(veth); err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, Port{Index: l.Attrs().Index, MAC: net.HardwareAddr{2, 0x42, 10, 0, 0, byte(2 + i)},
			IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(2 + i)}), Bridge: 7})
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
	if ok, err := Redirects(h, ports[0].Index, ports[1].Index); err != nil || !ok {
		t.Errorf("Redirects a → b: %t, %v", ok, err)
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
	if ok, _ := Redirects(h, ports[0].Index, ports[1].Index); ok {
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
	ports, err := p.Ports()
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range ports {
		if port.Index == index {
			return true
		}
	}
	return false
}
