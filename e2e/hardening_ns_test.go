package e2e

import (
	"strings"
	"syscall"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// A root belongs to the host namespace its bridges, veths, firewall tables and
// forwarding switch live in. The same root used from another namespace in the same
// boot (a forgotten nsenter, a privileged container that mounts the root) changes
// nothing there and nothing in the root's own namespace: every command, reading ones
// included, is refused in one line naming the root's namespace as lsns shows it.
// Before, even `ps` took the other namespace for a rebooted host: it built the
// bridges, tables and forwarding there, moved the running container's veth there (the
// published port stopped answering the wan) and forgot that ctnet had turned
// forwarding on, which then stayed on after the last network went.
func TestWrongHostNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must("network", "create", "web", "--subnet", "10.74.0.0/24")
	e.runDetached(append([]string{"--name", "srv", "--network", "web", "-p", "8080:80", "--"}, peerServer(80)...)...)
	published := func() string {
		var got string
		eventually(func() bool { got = askPeer(e.wanRun, lab.HostUplinkIP, 8080); return got != "" })
		return got
	}
	if got := published(); got != lab.WANIP {
		t.Fatalf("before: the published port answers the wan with %q, want %s", got, lab.WANIP)
	}
	rootNS, err := e.hostRun("readlink", "/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	rootNS = strings.TrimSpace(rootNS)

	other := &env{t: t, host: lab.NewSandbox(t), root: e.root}
	ownBefore, otherBefore := e.kernelState(), other.kernelState()
	if ownBefore["ip_forward"] != "1" || otherBefore["ip_forward"] != "0" {
		t.Fatalf("IPv4 forwarding: %s in the root's namespace, %s in the other; want 1 and 0", ownBefore["ip_forward"], otherBefore["ip_forward"])
	}
	reads := [][]string{
		{"ps"}, {"ps", "-a"}, {"inspect", "srv"}, {"network", "ls"},
		{"network", "inspect", "web"}, {"port", "srv"}, {"logs", "srv"},
	}
	changes := [][]string{
		{"run", "-d", "--name", "intruder", "--network", "web", "--", "sleep", "600"},
		{"network", "create", "other"},
		{"gc"},
		{"watch"},
	}
	refusal := "belongs to network namespace " + rootNS + ", not to this one"
	unchanged := func(what string) {
		t.Helper()
		if diff := otherBefore.Diff(other.kernelState()); diff != "" {
			t.Errorf("%s from another namespace changed it:\n%s", what, diff)
		}
		if out, _ := other.hostRun("ip", "-o", "link", "show", "type", "bridge"); strings.TrimSpace(out) != "" {
			t.Errorf("%s from another namespace made bridges there:\n%s", what, out)
		}
		if out, _ := other.hostRun("nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
			t.Errorf("%s from another namespace made a ruleset there:\n%s", what, out)
		}
		if diff := ownBefore.Diff(e.kernelState()); diff != "" {
			t.Errorf("%s from another namespace changed the root's:\n%s", what, diff)
		}
		if got := published(); got != lab.WANIP {
			t.Errorf("after %s from another namespace the published port answers the wan with %q, want %s", what, got, lab.WANIP)
		}
	}
	for _, phase := range []struct {
		what string
		cmds [][]string
	}{{"reading commands", reads}, {"changes", changes}} {
		for _, cmd := range phase.cmds {
			r := other.ctnet(cmd...)
			if r.Code == 0 || !strings.Contains(r.Stderr, refusal) || !strings.Contains(r.Stderr, "run ctnet in that namespace") ||
				strings.Contains(strings.TrimSpace(r.Stderr), "\n") {
				t.Errorf("%v from another namespace: want a one-line refusal saying %q, got %s", cmd, refusal, r)
			}
		}
		unchanged(phase.what)
	}
	// The same reads work in the root's namespace.
	for _, cmd := range reads {
		e.must(cmd...)
	}

	// ctnet still knows it turned forwarding on: the last network takes it off.
	e.must("rm", "-f", "srv")
	e.must("network", "rm", "web")
	if out, _ := e.hostRun("sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "0" {
		t.Errorf("IPv4 forwarding is %s after the last network went, want 0 (ctnet turned it on)", strings.TrimSpace(out))
	}
}

// A root never touches objects it does not own, and a rootless root owns no links or
// tables: an unprivileged user's gc, in a host namespace where a rootful root has a
// network and a container, leaves the bridge, the veth and the firewall tables alone
// and still releases the user's own dead containers. Before, it tried to delete the
// rootful root's bridge and veth as orphans and failed ("operation not permitted").
func TestRootlessGCLeavesRootfulObjects(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "web", "--subnet", "10.75.0.0/24")
	e.runDetached("--name", "a", "--network", "web", "--", "sleep", "600")
	u := newUserEnvIn(t, e.host)
	before := e.kernelState()
	rootful := func(when string) {
		t.Helper()
		if diff := before.Diff(e.kernelState()); diff != "" {
			t.Errorf("%s: the rootful root's objects changed:\n%s", when, diff)
		}
		if !pingOK(e.hostRun, e.ip("a")) {
			t.Errorf("%s: the host cannot reach the rootful container", when)
		}
	}
	gc := func(when string) string {
		t.Helper()
		r := u.ctnet("gc")
		if r.Code != 0 || strings.Contains(r.Stdout+r.Stderr, "operation not permitted") {
			t.Errorf("%s: rootless gc: %s", when, r)
		}
		return r.Stdout
	}
	if report := gc("with nothing of its own"); report != "" {
		t.Errorf("rootless gc with nothing of its own reports work:\n%s", report)
	}
	rootful("after rootless gc")

	// The user's own leftovers: a container whose processes were killed behind
	// ctnet's back.
	u.must("run", "-d", "--rm", "--name", "left", "--", "sleep", "600")
	var c container
	e.decodeInspected(u.must("inspect", "--format", "json", "left"), &c)
	for _, pid := range []int{c.Supervisor.PID, c.Process.PID} {
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone(t, pid)
	}
	if report := gc("with a dead container"); !strings.Contains(report, "released container left (") {
		t.Errorf("rootless gc does not release the user's dead container:\n%s", report)
	}
	if out := u.must("ps", "-a", "-q"); out != "" {
		t.Errorf("the user's dead --rm container is still listed after gc: %s", out)
	}
	rootful("after rootless gc released a container")
	e.must("rm", "-f", "a")
	e.must("network", "rm", "web")
}
