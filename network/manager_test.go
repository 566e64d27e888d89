package network

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// addrOf is the IPv4 address (CIDR) of an interface in the namespace at path, as ip
// shows it, or "".
func (h *testHost) addrOf(path, ifName string) string {
	h.t.Helper()
	for _, line := range strings.Split(h.kernel(path), "\n") {
		if rest, ok := strings.CutPrefix(line, "addr "+ifName+" "); ok {
			return rest
		}
	}
	return ""
}

// On a /29 (five container addresses) containers get addresses in order; a sixth
// is refused with ErrPoolExhausted and changes nothing; addresses that Remove frees
// are handed out again, in order, once the cursor has wrapped; an address asked for
// is given, and one that is taken, the gateway, or off the subnet is refused naming
// the field.
func TestAddresses(t *testing.T) {
	h := newTestHost(t)
	h.createNetwork("small", "10.92.0.0/29")
	for i, want := range []string{"10.92.0.2", "10.92.0.3", "10.92.0.4", "10.92.0.5", "10.92.0.6"} {
		c := h.attach("c"+string(rune('1'+i)), "small")
		if got := c.Attachments[0].IP.String(); got != want {
			t.Errorf("container %d got %s, want %s", i+1, got, want)
		}
		if got := h.addrOf(c.NetNS, "eth0"); got != want+"/29" {
			t.Errorf("container %d's eth0 has %q, want %s/29", i+1, got, want)
		}
	}

	spec := h.attachSpec("full", "small")
	before := h.state()
	_, err := h.m.Create(t.Context(), spec)
	requireErr(t, err, ErrPoolExhausted)
	for section, after := range h.state() {
		if diff := diffLines(before[section], after); diff != "" {
			t.Errorf("%s after the refused container (- before, + after):\n%s", section, diff)
		}
	}

	for _, name := range []string{"c4", "c2"} {
		if err := h.m.Remove(t.Context(), name, false); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"10.92.0.3", "10.92.0.5"} {
		c, err := h.m.Create(t.Context(), h.attachSpec("", "small"))
		if err != nil {
			t.Fatalf("a container after freeing addresses: %v", err)
		}
		if got := c.Attachments[0].IP.String(); got != want {
			t.Errorf("a container after freeing addresses got %s, want %s", got, want)
		}
	}

	// An address asked for, on a network with room.
	h.createNetwork("wide", "10.92.1.0/24")
	asked := h.attachSpec("asked", "wide")
	asked.IP = "10.92.1.77"
	c, err := h.m.Create(t.Context(), asked)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.addrOf(c.NetNS, "eth0"); got != "10.92.1.77/24" {
		t.Errorf("the container asking for 10.92.1.77 has %q on eth0", got)
	}

	for _, tc := range []struct {
		ip       string
		conflict bool // else invalid
	}{
		{"10.92.1.77", true},  // taken by "asked"
		{"10.92.1.1", false},  // the gateway
		{"10.92.2.5", false},  // another subnet
		{"10.92.1.x", false},  // not an address
		{"10.92.1.78", false}, // free: the positive control, below
	} {
		spec := h.attachSpec("try", "wide")
		spec.IP = tc.ip
		before := h.state()
		c, err := h.m.Create(t.Context(), spec)
		if tc.ip == "10.92.1.78" {
			if err != nil {
				t.Errorf("--ip %s, free: %v", tc.ip, err)
			} else if err := h.m.Remove(t.Context(), c.ID, false); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var fe *FieldError
		switch {
		case tc.conflict && (!errors.As(err, &fe) || fe.Field != "IP" || !errors.Is(err, ErrConflict) || errors.Is(err, ErrInvalid) || !strings.Contains(fmtErr(err), "asked")):
			t.Errorf("--ip %s, taken: got %v, want a FieldError on IP matching ErrConflict, naming the holder", tc.ip, err)
		case !tc.conflict && (!errors.As(err, &fe) || fe.Field != "IP" || fe.Value != tc.ip || !errors.Is(err, ErrInvalid) || errors.Is(err, ErrConflict)):
			t.Errorf("--ip %s: got %v (%T), want a FieldError on IP with the value, matching ErrInvalid", tc.ip, err, err)
		}
		for section, after := range h.state() {
			if diff := diffLines(before[section], after); diff != "" {
				t.Errorf("%s after --ip %s was refused (- before, + after):\n%s", section, tc.ip, diff)
			}
		}
	}

	// Connect takes an address the same way.
	h.createNetwork("other", "10.92.2.0/24")
	if _, err := h.m.Connect(t.Context(), "wide", "c1", ConnectOptions{IP: "10.92.1.77"}); !errors.Is(err, ErrConflict) {
		t.Errorf("connecting with a taken address: %v, want ErrConflict", err)
	}
	if a := h.connect("other", "asked", ConnectOptions{IP: "10.92.2.9"}); a.IP.String() != "10.92.2.9" || h.addrOf(c.NetNS, a.IfName) != "10.92.2.9/24" {
		t.Errorf("connected with --ip 10.92.2.9: attachment %v, %s has %q", a.IP, a.IfName, h.addrOf(c.NetNS, a.IfName))
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A second network comes as eth1 with its address but no second default route;
// disconnecting it leaves eth0 as it was; its firewall elements come and go with it.
func TestConnectDisconnect(t *testing.T) {
	h := newTestHost(t)
	h.createNetwork("front", "10.93.0.0/24")
	h.createNetwork("back", "10.93.1.0/24")
	c := h.attach("web", "front", "8080:80")
	withEth0 := h.kernel(c.NetNS)

	a := h.connect("back", "web", ConnectOptions{})
	if a.IfName != "eth1" {
		t.Errorf("the second network's interface is %s, want eth1", a.IfName)
	}
	ns := h.kernel(c.NetNS)
	if got := h.addrOf(c.NetNS, "eth1"); got != a.IP.String()+"/24" {
		t.Errorf("eth1 has %q, want %s/24", got, a.IP)
	}
	var defaults []string
	for _, line := range strings.Split(ns, "\n") {
		if strings.HasPrefix(line, "route ") && strings.Contains(line, " default ") {
			defaults = append(defaults, line)
		}
	}
	if len(defaults) != 1 || !strings.HasPrefix(defaults[0], "route eth0 ") || !strings.Contains(defaults[0], "via=10.93.0.1 ") {
		t.Errorf("default routes with two networks: %q, want the one through eth0 to 10.93.0.1", defaults)
	}
	host := h.kernel(h.sb.Path)
	for _, words := range [][]string{
		{`"port_ips"`, a.HostVeth, a.IP.String()},
		{`"port_macs"`, a.HostVeth, a.MAC},
		{`"ports"`, `"bridge"`, a.HostVeth},
	} {
		if len(nftLines(host, words...)) == 0 {
			t.Errorf("no nft element with %q after connecting", words)
		}
	}

	if err := h.m.Disconnect(t.Context(), "back", "web"); err != nil {
		t.Fatal(err)
	}
	if diff := diffLines(withEth0, h.kernel(c.NetNS)); diff != "" {
		t.Errorf("the container's namespace after disconnecting differs from before connecting (- before, + after):\n%s", diff)
	}
	host = h.kernel(h.sb.Path)
	if lines := nftLines(host, a.HostVeth); len(lines) > 0 {
		t.Errorf("nft still mentions %s after disconnecting:\n%s", a.HostVeth, strings.Join(lines, "\n"))
	}
	if len(nftLines(host, `"port_ips"`, c.Attachments[0].HostVeth, c.Attachments[0].IP.String())) == 0 {
		t.Errorf("eth0's nft element went with eth1's")
	}
	got := h.container("web")
	if len(got.Attachments) != 1 || got.Attachments[0].IfName != "eth0" || len(got.Ports) != 1 {
		t.Errorf("the container after disconnecting: attachments %+v, ports %+v", got.Attachments, got.Ports)
	}
}

// A second root in the same host namespace is refused, naming the first, and
// changes nothing; once the first root's database is gone, the second takes the
// host over and removes what the first left.
func TestOwnership(t *testing.T) {
	h := newTestHost(t)
	first := h.createNetwork("first", "10.94.0.0/24")
	c := h.attach("old", "first", "8080:80")
	withFirst := h.kernel(h.sb.Path)

	secondRoot := filepath.Join(t.TempDir(), "second")
	second := h.manager(secondRoot)
	_, err := second.CreateNetwork(t.Context(), NetworkSpec{Name: "second", Subnet: "10.94.1.0/24"})
	if !errors.Is(err, ErrConflict) || !strings.Contains(fmtErr(err), h.root) {
		t.Errorf("a second root's change: %v, want ErrConflict naming %s", err, h.root)
	}
	if diff := diffLines(withFirst, h.kernel(h.sb.Path)); diff != "" {
		t.Errorf("the host after the second root was refused (- before, + after):\n%s", diff)
	}
	if ns, err := second.Networks(); err != nil || len(ns) != 0 {
		t.Errorf("the second root's networks after its refused change: %v, %v", ns, err)
	}

	if err := os.Remove(filepath.Join(h.root, "state.db")); err != nil {
		t.Fatal(err)
	}
	if _, err := second.CreateNetwork(t.Context(), NetworkSpec{Name: "second", Subnet: "10.94.1.0/24"}); err != nil {
		t.Fatalf("the second root once the first's database is gone: %v", err)
	}
	host := h.kernel(h.sb.Path)
	for _, gone := range []string{first.Bridge, c.Attachments[0].HostVeth} {
		if strings.Contains(host, gone) {
			t.Errorf("%s of the first root is still on the host after the second took over", gone)
		}
	}
	if len(nftLines(host, `"owner"`, secondRoot)) == 0 || len(nftLines(host, `"owner"`, h.root+`"`)) > 0 {
		t.Errorf("the firewall's owner after the takeover:\n%s", strings.Join(nftLines(host, `"owner"`), "\n"))
	}
	if strings.Contains(h.kernel(c.NetNS), "eth0") {
		t.Errorf("the first root's container still has eth0 after the takeover")
	}
	h.removeAll(second)
	// The record that ctnet turned forwarding on went with the first root's
	// database, so nothing turns it off: the sandbox gets it back as it was.
	h.sb.Sysctl(t, "net.ipv4.ip_forward", "0")
}

// A ctnet network cannot publish on [::1] (IPv6 has no route_localnet; the
// user-mode network listens there itself): the port is refused, naming it and why,
// and nothing changes; the same port on 127.0.0.1 is published.
func TestIPv6LoopbackRefusedOnNetwork(t *testing.T) {
	h := newTestHost(t)
	h.createNetwork("web", "10.93.0.0/24")
	spec := h.attachSpec("v6", "web", "[::1]:8080:80")
	before := h.state()
	_, err := h.m.Create(t.Context(), spec)
	requireErr(t, err, ErrInvalid)
	if !strings.Contains(err.Error(), "[::1]:8080:80/tcp") || !strings.Contains(err.Error(), "route_localnet") {
		t.Errorf("refusal %q should name the port and say why [::1] cannot be published", err)
	}
	for section, after := range h.state() {
		if diff := diffLines(before[section], after); diff != "" {
			t.Errorf("%s after the refused container (- before, + after):\n%s", section, diff)
		}
	}
	if c := h.attach("v4", "web", "127.0.0.1:8080:80"); len(c.Ports) != 1 {
		t.Errorf("positive control: 127.0.0.1:8080:80 gave ports %v", c.Ports)
	}
}

// A name that is a prefix of another network's ID names a network of its own: making
// one is no clash, and EnsureNetwork makes it instead of taking the other network,
// whose ID lookups by prefix would find.
func TestNetworkNamesThatArePrefixesOfIDs(t *testing.T) {
	h := newTestHost(t)
	first := h.createNetwork("first", "10.93.0.0/24")
	named := h.createNetwork(first.ID[:8], "10.93.1.0/24")
	ensured, err := h.m.EnsureNetwork(t.Context(), NetworkSpec{Name: first.ID[:8], Subnet: "10.93.1.0/24"})
	if err != nil || ensured.ID != named.ID {
		t.Errorf("EnsureNetwork(%s) = %v, %v; want network %s", first.ID[:8], ensured, err, named.ID)
	}
	made, err := h.m.EnsureNetwork(t.Context(), NetworkSpec{Name: first.ID[:10], Subnet: "10.93.2.0/24"})
	if err != nil || made.ID == first.ID || made.Name != first.ID[:10] {
		t.Errorf("EnsureNetwork(%s), a name no network has = %v, %v; want a new network of that name", first.ID[:10], made, err)
	}
}

// A supervisor whose container rm -f removed finds it gone by a read: it opens no
// nftables socket, whose close at its exit (which rm waits for) would wait for the
// removal's release in nf_tables, one RCU grace period. A container still recorded
// is released, through the firewall.
func TestExitedOpensTheFirewallOnlyToRelease(t *testing.T) {
	h := newTestHost(t)
	h.createNetwork("front", "10.93.4.0/24")
	for _, tc := range []struct {
		name        string
		removeFirst bool
	}{
		{"removed by rm -f", true},
		{"still recorded", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.attach("web", "front")
			if tc.removeFirst {
				if err := h.m.Remove(context.Background(), c.ID, true); err != nil {
					t.Fatal(err)
				}
			}
			supervisor := h.manager(h.root)
			if err := supervisor.exited(context.Background(), c.ID, 137); err != nil {
				t.Fatal(err)
			}
			socket, err := supervisor.host.NFTSocket()
			if err != nil {
				t.Fatal(err)
			}
			if socket != nil {
				socket.Close()
			}
			if opened := socket != nil; opened == tc.removeFirst {
				t.Errorf("nftables socket opened: %v, want %v", opened, !tc.removeFirst)
			}
			if !tc.removeFirst {
				if got := h.container(c.ID).State; got != StateExited {
					t.Errorf("the container is %s after its release, want exited", got)
				}
				if err := h.m.Remove(context.Background(), c.ID, true); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
