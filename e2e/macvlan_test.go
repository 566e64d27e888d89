package e2e

import (
	"fmt"
	"maps"
	"os/exec"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/fixhint"
	"github.com/ctnet/ctnet/internal/lab"
)

// The segment of the macvlan tests: the sandbox host's interface lan0, whose far end
// is in the wan, where the segment's router has segmentRouter.
const (
	segmentSubnet = "198.51.100.0/24"
	segmentRouter = "198.51.100.1"
)

// addSegment gives the sandbox host an interface lan0 on a segment shared with the
// wan (a veth whose other end, lan1, is the wan's, with the router's address), as a
// host's second NIC on a LAN; removed at cleanup, before the env's own checks.
func addSegment(t *testing.T, e *env) {
	t.Helper()
	// Made as lab.AddWAN makes the uplink, so that it works after e.reboot too, whose
	// new boot does not see the wan's name.
	for _, args := range [][]string{
		{"ip", "link", "add", "lan0", "netns", e.host.Name, "type", "veth", "peer", "name", "lan1", "netns", e.wan.Name},
		{"ip", "-n", e.host.Name, "link", "set", "lan0", "up"},
		{"ip", "-n", e.wan.Name, "addr", "add", segmentRouter + "/24", "dev", "lan1"},
		{"ip", "-n", e.wan.Name, "link", "set", "lan1", "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "-n", e.host.Name, "link", "del", "lan0").Run() })
}

// A macvlan network puts containers on the parent's segment with their own
// addresses: the wan sees a container's own address (no masquerade), two containers
// reach each other, an attached namespace gets the same interface, ctnet adds no
// bridge, tables or forwarding, and rm, gc and network rm leave the host and the
// attached namespace as they were.
func TestMacvlanNetwork(t *testing.T) {
	e := newEnv(t)
	addSegment(t, e)
	before := e.host.Snapshot(t, e.root)
	server := e.wan.Command(t.Context(), peerServer(7000)...)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() })

	e.must("network", "create", "lan", "-d", "macvlan", "--parent", "lan0", "--subnet", segmentSubnet,
		"--gateway", segmentRouter, "--ip-range", "198.51.100.64/26")
	e.runDetached("--name", "mv1", "--network", "lan", "--", "sleep", "600")
	e.runDetached("--name", "mv2", "--network", "lan", "--", "sleep", "600")
	ip1, ip2 := e.kernelAddr("mv1", "eth0"), e.kernelAddr("mv2", "eth0")
	if ip1 != "198.51.100.65" || ip2 != "198.51.100.66" {
		t.Errorf("addresses %s and %s, want the first two of the range 198.51.100.64/26", ip1, ip2)
	}
	if out, _ := e.inContainer("mv1", "ip", "-d", "link", "show", "eth0"); !strings.Contains(out, "macvlan mode bridge") {
		t.Errorf("mv1's eth0 is not a macvlan in bridge mode: %s", out)
	}
	if got := e.defaultRoutes(lab.InNetNS(e.inspect("mv1").NetNS)); len(got) != 1 || got[0] != "via "+segmentRouter+" dev eth0" {
		t.Errorf("mv1's default routes %v, want one via the segment's router %s", got, segmentRouter)
	}
	if !eventually(func() bool { return askPeer(e.containerRun("mv1"), segmentRouter, 7000) != "" }) {
		t.Fatal("mv1 does not reach the wan's server on the segment")
	}
	if seen := askPeer(e.containerRun("mv1"), segmentRouter, 7000); seen != ip1 {
		t.Errorf("the wan sees mv1 as %q, want its own address %s", seen, ip1)
	}
	// Beyond the segment, through its router: the wan's address on the uplink.
	if seen := askPeer(e.containerRun("mv1"), lab.WANIP, 7000); seen != ip1 {
		t.Errorf("the wan's %s sees mv1 as %q, want its own address %s", lab.WANIP, seen, ip1)
	}
	if !pingOK(e.containerRun("mv1"), ip2) {
		t.Errorf("mv1 does not reach mv2 (%s) on the segment", ip2)
	}
	if out, _ := e.hostRun("nft", "list", "tables"); strings.Contains(out, "ctnet") {
		t.Errorf("a macvlan network made firewall tables: %s", out)
	}
	if out, _ := e.hostRun("sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "0" {
		t.Errorf("a macvlan network turned IPv4 forwarding on")
	}
	if text := e.must("network", "inspect", "lan"); !strings.Contains(text, "parent:     lan0") || !strings.Contains(text, "mv1") {
		t.Errorf("network inspect does not show the parent and the containers:\n%s", text)
	}

	// An attached namespace: its interface is deleted by rm, the namespace stays.
	pod := lab.NewSandbox(t)
	e.must("attach", "--netns", pod.Path, "--name", "pod", "--network", "lan")
	if seen := askPeer(pod.Try, segmentRouter, 7000); seen != e.kernelAddr("pod", "eth0") {
		t.Errorf("the wan sees the attached namespace as %q, want its own address", seen)
	}
	e.must("rm", "pod")
	if out, _ := pod.Try("ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("rm left the macvlan in the attached namespace: %s", out)
	}

	// A killed container's address is released by gc, and its interface went with
	// its namespace.
	e.killContainer("mv2")
	if report := strings.Join(e.gc(), "\n"); !strings.Contains(report, "released container mv2") {
		t.Errorf("gc does not release the killed container:\n%s", report)
	}
	e.runDetached("--name", "mv3", "--network", "lan", "--ip", ip2, "--", "sleep", "600")
	e.must("rm", "-f", "mv1", "mv2", "mv3")
	e.must("network", "rm", "lan")
	if diff := before.Diff(e.host.Snapshot(t, e.root)); diff != "" {
		t.Errorf("the sandbox is not as it was before the macvlan network:\n%s", diff)
	}
}

// Bad input for macvlan networks is refused in one line that says what to fix, and
// changes nothing; the same commands, well written, are taken.
func TestMacvlanBadInput(t *testing.T) {
	e := newEnv(t)
	addSegment(t, e)
	e.must("network", "create", "web", "--subnet", "10.77.0.0/24")
	e.must("network", "create", "lan", "-d", "macvlan", "--parent", "lan0", "--subnet", segmentSubnet)
	bridge := e.bridgeOf("web")
	before := e.host.Snapshot(t, e.root)
	storeBefore := e.must("ps", "-a", "--format", "json") + e.must("network", "ls", "--format", "json")
	macvlan := func(args ...string) []string {
		return append([]string{"network", "create", "x", "-d", "macvlan"}, args...)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "x", "-d", "ipvlan", "--parent", "lan0", "--subnet", "10.5.0.0/24"}, "ipvlan is not available in this kernel"},
		{[]string{"network", "create", "x", "-d", "overlay"}, "bad --driver \"overlay\": use bridge or macvlan"},
		{macvlan("--parent", "nosuch0", "--subnet", "10.5.0.0/24"), "bad --parent \"nosuch0\": the host has no interface of that name"},
		{macvlan("--parent", "lo", "--subnet", "10.5.0.0/24"), "loopback"},
		{macvlan("--parent", bridge, "--subnet", "10.5.0.0/24"), "ctnet's own"},
		{macvlan("--subnet", "10.5.0.0/24"), "needs --parent"},
		{macvlan("--parent", "lan0"), "needs --subnet"},
		{macvlan("--parent", "lan0", "--subnet", "10.5.0.0/24", "--internal"), "drop --internal"},
		{macvlan("--parent", "lan0", "--subnet", "10.5.0.0/24", "--ipv6"), "drop --ipv6"},
		{macvlan("--parent", "lan0", "--subnet", "10.5.0.0/24", "--opt", "non-masquerade=10.0.0.0/8"), "drop --opt non-masquerade"},
		{macvlan("--parent", "lan0", "--subnet", "10.5.0.0/24", "--mtu", "9000"), "parent's MTU"},
		{macvlan("--parent", "lan0", "--subnet", "10.5.0.0/24", "--ip-range", "10.6.0.0/26"), "part of the subnet"},
		{[]string{"network", "create", "x", "--parent", "lan0", "--subnet", "10.5.0.0/24"}, "use it with -d macvlan"},
		{[]string{"run", "--network", "lan", "-p", "8080:80", "--", "true"}, "drop -p"},
		{[]string{"run", "--network", "lan", "--egress-rate", "10M", "--", "true"}, "bandwidth limits shape a host veth"},
	} {
		r := e.ctnet(c.args...)
		msg := strings.TrimSpace(r.Stderr)
		if r.Code == 0 {
			t.Errorf("%v: accepted", c.args)
			continue
		}
		if !strings.Contains(msg, c.want) {
			t.Errorf("%v: %q does not say %q", c.args, msg, c.want)
		}
		fixhint.Require(t, c.args, fmt.Errorf("%s", msg))
	}
	// Only other networks' subnets conflict with a macvlan network's (with the message
	// of a bridge network's conflict).
	if r := e.ctnet(macvlan("--parent", "lan0", "--subnet", "10.77.0.0/25")...); r.Code == 0 || !strings.Contains(r.Stderr, "overlaps 10.77.0.0/24 of network web") {
		t.Errorf("a macvlan subnet overlapping network web's: %s", r)
	}
	if diff := before.Diff(e.host.Snapshot(t, e.root)); diff != "" {
		t.Errorf("refused input changed the kernel:\n%s", diff)
	}
	if after := e.must("ps", "-a", "--format", "json") + e.must("network", "ls", "--format", "json"); after != storeBefore {
		t.Errorf("refused input changed the store:\n%s\n%s", storeBefore, after)
	}
	// The positive controls.
	e.must("network", "create", "x", "-d", "macvlan", "--parent", "lan0", "--subnet", "10.5.0.0/24", "--ip-range", "10.5.0.0/26")
	e.runDetached("--name", "ok", "--network", "lan", "--", "true")
	e.must("rm", "-f", "ok")
	e.must("network", "rm", "x", "lan", "web")
}

// After a reboot a macvlan network's record is all there is: the first change
// releases its containers, whose namespaces and interfaces are gone, doctor reports
// a parent missing from the new host, and once the segment is back a container on the
// network reaches it with its own address again; gc then has nothing to do.
func TestRebootMacvlan(t *testing.T) {
	e := newEnv(t)
	addSegment(t, e)
	e.must("network", "create", "lan", "-d", "macvlan", "--parent", "lan0", "--subnet", segmentSubnet, "--gateway", segmentRouter)
	e.runDetached("--name", "before", "--network", "lan", "--", "sleep", "600")

	e.reboot("before")
	// As TestReboot: the fresh host is what the leak check compares with.
	fresh := maps.Clone(e.host.Snapshot(t, e.root))
	fresh["namespaces under root"], fresh["mounts under root"] = e.before["namespaces under root"], e.before["mounts under root"]
	e.before = fresh
	r := e.ctnet("doctor")
	if r.Code == 0 || !strings.Contains(r.Stdout, "parent lan0 of macvlan network lan is gone from the host") {
		t.Errorf("doctor on a host without the parent: %s", r)
	}
	// The old host's end of the segment took the wan's with it, in the background.
	if !eventually(func() bool { _, err := e.wanRun("ip", "link", "show", "lan1"); return err != nil }) {
		t.Fatal("the wan's end of the old segment outlives the old host")
	}
	addSegment(t, e)
	server := e.wan.Command(t.Context(), peerServer(7000)...)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() })
	e.runDetached("--name", "after", "--network", "lan", "--", "sleep", "600")
	if state := e.inspect("before").State; state != "exited" {
		t.Errorf("the container from before the reboot is %s, want exited", state)
	}
	ip := e.kernelAddr("after", "eth0")
	if !eventually(func() bool { return askPeer(e.containerRun("after"), segmentRouter, 7000) == ip }) {
		t.Errorf("after the reboot, a container on the macvlan network does not reach the segment with its own address %s", ip)
	}
	if report := e.gc(); len(report) > 0 {
		t.Errorf("gc after the restore: %v, want nothing to do", report)
	}
	e.must("rm", "-f", "before", "after")
	e.must("network", "rm", "lan")
}
