package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/link"
)

// A MAC asked for is the interface's, in the kernel and in the bridge table's
// port_macs (which lets the port send only with it), for a container's first
// network and a further one; without one, the MAC derived from the address is
// kept; one no interface can hold is a FieldError on MAC that changes nothing.
func TestGivenMAC(t *testing.T) {
	h := newTestHost(t)
	h.createNetwork("front", "10.93.0.0/24")
	h.createNetwork("back", "10.93.1.0/24")
	spec := h.attachSpec("web", "front")
	spec.MAC = "02:00:0A:5D:00:50"
	c, err := h.m.Create(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	a := h.connect("back", "web", ConnectOptions{MAC: "02:00:0a:5d:01:50"})
	plain := h.attach("plain", "front")
	derived := link.MACFor(plain.Attachments[0].IP).String()
	host := h.kernel(h.sb.Path)
	for _, want := range []struct {
		netns, ifName, veth, mac, recorded string
	}{
		{c.NetNS, "eth0", c.Attachments[0].HostVeth, "02:00:0a:5d:00:50", c.Attachments[0].MAC},
		{c.NetNS, "eth1", a.HostVeth, "02:00:0a:5d:01:50", a.MAC},
		{plain.NetNS, "eth0", plain.Attachments[0].HostVeth, derived, plain.Attachments[0].MAC},
	} {
		if want.recorded != want.mac {
			t.Errorf("%s's record says MAC %s, want %s", want.veth, want.recorded, want.mac)
		}
		if out := h.run(want.netns, "ip", "-o", "link", "show", "dev", want.ifName); !strings.Contains(out, "link/ether "+want.mac+" ") {
			t.Errorf("%s does not have MAC %s: %s", want.ifName, want.mac, out)
		}
		if len(nftLines(host, `"port_macs"`, want.veth, want.mac)) == 0 {
			t.Errorf("no port_macs element for %s with %s", want.veth, want.mac)
		}
	}

	spec = h.attachSpec("bad", "front")
	before := h.state()
	for _, mac := range []string{"01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:00", "web"} {
		spec.MAC = mac
		_, err := h.m.Create(t.Context(), spec)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "MAC" || !errors.Is(err, ErrInvalid) {
			t.Errorf("Create with MAC %q: %v, want a FieldError on MAC", mac, err)
		}
		if _, err := h.m.Connect(t.Context(), "back", "plain", ConnectOptions{MAC: mac}); !errors.As(err, &fe) || fe.Field != "MAC" {
			t.Errorf("Connect with MAC %q: %v, want a FieldError on MAC", mac, err)
		}
	}
	for what, after := range h.state() {
		if diff := diffLines(before[what], after); diff != "" {
			t.Errorf("refused MACs changed %s:\n%s", what, diff)
		}
	}
}

// A host socket on a port is a clash unless the caller reserves its ports itself
// (a CNI runtime), and then only a port another container publishes is one.
func TestCallerReservesHostPorts(t *testing.T) {
	h := newTestHost(t)
	h.createNetwork("front", "10.93.0.0/24")
	ln := h.listen(t, 8085)
	defer ln()
	if _, err := h.m.Create(t.Context(), h.attachSpec("plain", "front", "8085:80")); !errors.Is(err, ErrPortInUse) {
		t.Errorf("a port a host socket holds, without CallerReservesHostPorts: %v, want ErrPortInUse", err)
	}
	m, err := New(Options{Root: h.root, HostNetNS: h.sb.Path, CallerReservesHostPorts: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := m.Create(t.Context(), h.attachSpec("runtime", "front", "8085:80"))
	if err != nil {
		t.Fatalf("a port the caller reserves: %v", err)
	}
	if len(c.Ports) != 1 || c.Ports[0].HostPort != 8085 {
		t.Errorf("the container publishes %+v, want 8085", c.Ports)
	}
	_, err = m.Create(t.Context(), h.attachSpec("second", "front", "8085:80"))
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "published by container runtime") {
		t.Errorf("a port another container publishes, with CallerReservesHostPorts: %v, want ErrPortInUse naming it", err)
	}
	if err := m.Remove(context.Background(), "runtime", false); err != nil {
		t.Fatal(err)
	}
}

// listen holds a TCP listener on port in the sandbox host until the returned
// function closes it.
func (h *testHost) listen(t *testing.T, port uint16) func() {
	t.Helper()
	var ln net.Listener
	err := h.m.host.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(netip.IPv4Unspecified(), port).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return func() { ln.Close() }
}
