package e2e

import (
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// After a reboot — a new boot id, a fresh host namespace, the containers' processes
// and every mount gone, the ctnet root kept on disk with its namespace files —
// reading commands show the store's view and change nothing (containers whose
// process is gone read as exited). The first change restores every network's
// bridge, address and firewall entries and IPv4 forwarding from the store, and
// releases the containers that no longer exist. New containers then work as before,
// and gc finds nothing to do.
func TestReboot(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must("network", "create", "web", "--subnet", "10.73.0.0/24")
	e.must("network", "create", "sealed", "--internal")
	e.runDetached(append([]string{"--name", "a", "--network", "web", "-p", "8080:80", "--"}, peerServer(80)...)...)
	e.runDetached("--name", "b", "--", "sleep", "600")
	e.runDetached("--name", "c", "--network", "sealed", "--", "sleep", "600")
	e.must("network", "connect", "web", "c")
	e.runDetached("--name", "n", "--network", "none", "--", "sleep", "600")
	e.runDetached("--rm", "--name", "gone", "--network", "web", "--", "sleep", "600")
	stBefore := e.store()
	bridgesBefore := e.bridges()
	if files, _ := e.namespacesUnderRoot(); len(files) != 5 {
		t.Fatalf("want 5 container namespaces under the root before the reboot, got %v", files)
	}

	e.reboot("a", "b", "c", "n", "gone")
	// The fresh host is what the leak check at cleanup compares with; the root's
	// namespaces are expected gone by then, as they were before the test.
	rebooted := e.host.Snapshot(t, e.root)
	fresh := maps.Clone(rebooted)
	fresh["namespaces under root"], fresh["mounts under root"] = e.before["namespaces under root"], e.before["mounts under root"]
	e.before = fresh
	if out, _ := e.hostRun("nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("the fresh host has a ruleset:\n%s", out)
	}

	// Reading commands show the store's view and leave the kernel alone.
	ps := e.must("ps", "-a")
	for _, name := range []string{"a", "b", "c", "n", "gone"} {
		if !regexp.MustCompile(`(?m)^\w+\s+` + name + `\s.*\sExited`).MatchString(ps) {
			t.Errorf("after the reboot ps -a should list %s as exited:\n%s", name, ps)
		}
	}
	for _, cmd := range [][]string{{"inspect", "a"}, {"network", "ls"}, {"network", "inspect", "web"}, {"logs", "a"}} {
		e.must(cmd...)
	}
	if diff := rebooted.Diff(e.host.Snapshot(t, e.root)); diff != "" {
		t.Errorf("reading commands after the reboot changed the kernel:\n%s", diff)
	}
	if out, _ := e.hostRun("sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "0" {
		t.Errorf("reading commands after the reboot turned IPv4 forwarding on")
	}

	// The first change restores.
	e.must("rm", "n")
	ps = e.must("ps", "-a")
	for _, name := range []string{"a", "b", "c"} {
		if !regexp.MustCompile(`(?m)^\w+\s+` + name + `\s.*\sExited`).MatchString(ps) {
			t.Errorf("after the restore ps -a should list %s as exited:\n%s", name, ps)
		}
	}
	if strings.Contains(ps, " gone ") {
		t.Errorf("the --rm container is still listed after the restore:\n%s", ps)
	}
	if got := e.bridges(); !slices.Equal(got, bridgesBefore) {
		t.Errorf("bridges after the restore:\n%v\nwant, as before:\n%v", got, bridgesBefore)
	}
	st := e.store()
	if got, want := st.raw[strings.Index(st.raw, "networks:"):], stBefore.raw[strings.Index(stBefore.raw, "networks:"):]; got != want {
		t.Errorf("the networks changed across the reboot:\n--- before\n%s\n--- after\n%s", want, got)
	}
	e.checkConsistent(t)
	if files, mounts := e.namespacesUnderRoot(); len(files)+len(mounts) > 0 {
		t.Errorf("the dead containers' namespaces remain under the root: %v %v", files, mounts)
	}
	if report := e.gc(); len(report) > 0 {
		t.Errorf("gc after the restore found work:\n%s", strings.Join(report, "\n"))
	}

	// The restored networks work: a published port from the wan, the way out, a
	// container on the same network, isolation of the internal one.
	e.runDetached(append([]string{"--name", "a2", "--network", "web", "-p", "8080:80", "--"}, peerServer(80)...)...)
	e.runDetached("--name", "b2", "--network", "web", "--", "sleep", "600")
	e.runDetached("--name", "c2", "--network", "sealed", "--", "sleep", "600")
	var got string
	if !eventually(func() bool { got = askPeer(e.wanRun, lab.HostUplinkIP, 8080); return got != "" }) {
		t.Errorf("the published port does not answer from the wan after the reboot")
	} else if got != lab.WANIP {
		t.Errorf("the server saw the wan client as %s, want %s", got, lab.WANIP)
	}
	if !pingOK(e.containerRun("b2"), lab.WANIP) {
		t.Errorf("a container cannot reach the wan after the reboot")
	}
	if !pingOK(e.containerRun("b2"), e.ip("a2")) {
		t.Errorf("containers on one network cannot reach each other after the reboot")
	}
	sealedGateway := ""
	for _, n := range st.Networks {
		if n.Name == "sealed" {
			sealedGateway = n.Gateway
		}
	}
	if !pingOK(e.containerRun("c2"), sealedGateway) {
		t.Errorf("a container on the internal network cannot reach its gateway %s after the reboot", sealedGateway)
	}
	if pingOK(e.containerRun("c2"), lab.WANIP) {
		t.Errorf("a container on the internal network reaches the wan after the reboot")
	}
	e.checkConsistent(t)
	e.must("rm", "-f", "a", "b", "c", "a2", "b2", "c2")
	e.must("network", "rm", "web", "sealed", "bridge")
}

// bridges describes the sandbox's bridges tagged as ctnet's: name, tag, MAC, addresses.
func (e *env) bridges() []string {
	e.t.Helper()
	var out []string
	for _, l := range e.linksIn(nil) {
		if l.LinkInfo.Kind == "bridge" && strings.HasPrefix(l.Alias, "ctnet:") {
			var addrs []string
			for _, a := range l.Addrs {
				if a.Family == "inet" {
					addrs = append(addrs, a.Local)
				}
			}
			out = append(out, l.Name+" "+l.Alias+" "+l.Address+" "+strings.Join(addrs, ",")+" up="+map[bool]string{true: "yes", false: "no"}[l.up()])
		}
	}
	slices.Sort(out)
	return out
}

// reboot stands in for a reboot of the sandbox: the named containers' processes
// are killed, every mount under the root goes (its files stay, as on disk), the host
// namespace is replaced by a fresh one linked to the wan again, and ctnet runs from
// then on in a new boot (lab.Boot), with another boot id.
func (e *env) reboot(containers ...string) {
	e.t.Helper()
	for _, name := range containers {
		e.killContainer(name)
	}
	mounts := lab.MountsUnder(e.root)
	// Pins first, then the directory they are in.
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if out, err := exec.Command("umount", m).CombinedOutput(); err != nil {
			e.t.Fatalf("umount %s: %v: %s", m, err, out)
		}
	}
	for _, args := range [][]string{{"ip", "netns", "del", e.host.Name}, {"ip", "netns", "add", e.host.Name}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			e.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	e.host.MustRun(e.t, "ip", "link", "set", "lo", "up")
	e.reconnectWAN()
	e.host.Boot = lab.NewBoot(e.t)
}

// reconnectWAN links a fresh host namespace to the test's wan as lab.AddWAN did the
// first one; the wan's end of the old link went with the old host.
func (e *env) reconnectWAN() {
	e.t.Helper()
	// The old host namespace is destroyed in the background; its veth pair with it.
	if !eventually(func() bool { _, err := e.wanRun("ip", "link", "show", "wan0"); return err != nil }) {
		e.t.Fatalf("the wan's end of the old uplink outlives the old host")
	}
	for _, args := range [][]string{
		{"ip", "link", "add", "uplink0", "netns", e.host.Name, "type", "veth", "peer", "name", "wan0", "netns", e.wan.Name},
		{"ip", "-n", e.host.Name, "addr", "add", lab.HostUplinkIP + "/24", "dev", "uplink0"},
		{"ip", "-n", e.host.Name, "link", "set", "uplink0", "up"},
		{"ip", "-n", e.wan.Name, "addr", "add", lab.WANIP + "/24", "dev", "wan0"},
		{"ip", "-n", e.wan.Name, "link", "set", "wan0", "up"},
		{"ip", "-n", e.host.Name, "route", "add", "default", "via", lab.WANIP},
		{"ip", "-n", e.host.Name, "addr", "add", lab.HostUplinkIP6 + "/64", "dev", "uplink0", "nodad"},
		{"ip", "-n", e.wan.Name, "addr", "add", lab.WANIP6 + "/64", "dev", "wan0", "nodad"},
		{"ip", "-n", e.host.Name, "-6", "route", "add", "default", "via", lab.WANIP6},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			e.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	if !eventually(func() bool {
		l, _ := e.hostRun("ip", "-o", "link", "show", "uplink0")
		return !strings.Contains(l, "NO-CARRIER") && strings.Contains(l, " state UP ")
	}) {
		e.t.Fatalf("the new uplink has no carrier")
	}
}
