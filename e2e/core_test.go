package e2e

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/proc"
)

var lookPath = exec.LookPath

// The reference article's scenario: two containers on one network reach each other
// and the gateway, the host reaches both, TCP works between them.
func TestArticleScenario(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "web", "--subnet", "172.30.0.0/24")
	e.runDetached("--name", "a", "--network", "web", "--", "sleep", "600")
	e.runDetached(append([]string{"--name", "b", "--network", "web", "--"}, peerServer(7000)...)...)
	a, b := e.kernelAddr("a", "eth0"), e.kernelAddr("b", "eth0")
	if a == b || !strings.HasPrefix(a, "172.30.0.") || !strings.HasPrefix(b, "172.30.0.") {
		t.Fatalf("addresses %s and %s: want two distinct ones in 172.30.0.0/24", a, b)
	}
	// The bridge holds the gateway, as `ip` sees it.
	if out, _ := e.hostRun("ip", "-4", "addr", "show"); !strings.Contains(out, "172.30.0.1/24") {
		t.Errorf("no bridge with the gateway address 172.30.0.1/24 on the host:\n%s", out)
	}
	checks := []struct {
		what string
		run  func(...string) (string, error)
		to   string
	}{
		{"a pings b", e.containerRun("a"), b},
		{"b pings a", e.containerRun("b"), a},
		{"a pings the gateway", e.containerRun("a"), "172.30.0.1"},
		{"the host pings a", e.hostRun, a},
		{"the host pings b", e.hostRun, b},
	}
	for _, c := range checks {
		if !pingOK(c.run, c.to) {
			t.Errorf("%s (%s): no reply", c.what, c.to)
		}
	}
	var seen string
	if !eventually(func() bool { seen = askPeer(e.containerRun("a"), b, 7000); return seen != "" }) {
		t.Fatalf("TCP from a to b:7000: no answer")
	}
	if seen != a {
		t.Errorf("b saw a's connection from %q, want %s", seen, a)
	}
	// Inside: eth0 with the address and a default route via the gateway.
	out, _ := e.inContainer("a", "ip", "-4", "route")
	if !strings.Contains(out, "default via 172.30.0.1 dev eth0") {
		t.Errorf("a's routes: want a default route via 172.30.0.1:\n%s", out)
	}
	e.must("rm", "-f", "a", "b")
	e.must("network", "rm", "web")
}

// host, none and container:NAME behave as Docker's network modes do.
func TestNetworkModes(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "owner", "--", "sleep", "600")
	ownerIP := e.ip("owner")
	cases := []struct {
		mode        string
		wantLinks   []string // interfaces the container sees (besides lo)
		notLinks    []string
		reachesHost bool // reaches the host's uplink address
		wantIP      string
	}{
		{mode: "host", wantLinks: []string{"uplink0", "ctnet0"}, reachesHost: true},
		{mode: "none", notLinks: []string{"eth0", "uplink0"}},
		{mode: "container:owner", wantLinks: []string{"eth0"}, notLinks: []string{"uplink0"}, reachesHost: true, wantIP: ownerIP},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			r := e.ctnet("run", "--rm", "--network", c.mode, "--", "sh", "-c", "ip -o link; ip -o -4 addr; ping -c1 -W1 "+lab.HostUplinkIP+" >/dev/null && echo REACHED")
			if r.Code != 0 && c.reachesHost {
				t.Fatalf("run --network %s: %s", c.mode, r)
			}
			for _, l := range c.wantLinks {
				if !strings.Contains(r.Stdout, " "+l+":") && !strings.Contains(r.Stdout, " "+l+"@") {
					t.Errorf("--network %s: interface %s not seen inside:\n%s", c.mode, l, r.Stdout)
				}
			}
			for _, l := range c.notLinks {
				if strings.Contains(r.Stdout, " "+l+":") || strings.Contains(r.Stdout, " "+l+"@") {
					t.Errorf("--network %s: interface %s seen inside, want it absent:\n%s", c.mode, l, r.Stdout)
				}
			}
			if !strings.Contains(r.Stdout, " lo ") && !strings.Contains(r.Stdout, "lo:") {
				t.Errorf("--network %s: no loopback inside:\n%s", c.mode, r.Stdout)
			}
			if got := strings.Contains(r.Stdout, "REACHED"); got != c.reachesHost {
				t.Errorf("--network %s: reaches the host = %t, want %t", c.mode, got, c.reachesHost)
			}
			if c.wantIP != "" && !strings.Contains(r.Stdout, c.wantIP+"/") {
				t.Errorf("--network %s: want the owner's address %s inside:\n%s", c.mode, c.wantIP, r.Stdout)
			}
		})
	}
	e.must("rm", "-f", "owner")
	e.must("network", "rm", "bridge")
}

// A namespace made with `ip netns add` joins a network with attach and is left to
// its owner, with only loopback once the links rm retired are deleted.
func TestAttachForeignNamespace(t *testing.T) {
	e := newEnv(t)
	name := lab.RandomName("ctx-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	e.runDetached("--name", "peer", "--", "sleep", "600")
	e.must("attach", "--netns", "/run/netns/"+name, "--name", "ext")
	ext := func(args ...string) (string, error) {
		return e.host.Try(append([]string{"ip", "netns", "exec", name}, args...)...)
	}
	out, _ := ext("ip", "-4", "-o", "addr")
	if !strings.Contains(out, e.ip("ext")+"/") {
		t.Errorf("attached namespace lacks its address %s:\n%s", e.ip("ext"), out)
	}
	if !pingOK(ext, "172.17.0.1") {
		t.Errorf("attached namespace cannot reach the gateway")
	}
	if !pingOK(ext, e.ip("peer")) {
		t.Errorf("attached namespace cannot reach another container")
	}
	e.must("rm", "ext")
	if _, err := os.Stat("/run/netns/" + name); err != nil {
		t.Fatalf("rm removed the attached namespace: %v", err)
	}
	e.host.AwaitDyingVeths(t)
	links, _ := ext("ip", "-o", "link")
	if n := len(strings.Split(strings.TrimSpace(links), "\n")); n != 1 || !strings.Contains(links, "lo:") {
		t.Errorf("after rm the namespace should hold only loopback:\n%s", links)
	}
	e.must("rm", "-f", "peer")
	e.must("network", "rm", "bridge")
}

// After rm and network rm nothing of ctnet remains (newEnv's cleanup compares the
// whole sandbox); the explicit check here also covers namespaces and mounts.
func TestNothingRemainsAfterRemoval(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "n1")
	e.must("network", "create", "n2", "--internal")
	e.runDetached("--name", "c1", "--network", "n1", "-p", "8080:80", "--", "sleep", "600")
	e.runDetached("--name", "c2", "--network", "n2", "--", "sleep", "600")
	e.must("network", "connect", "n1", "c2")
	nsPaths := []string{e.inspect("c1").NetNS, e.inspect("c2").NetNS}
	e.must("rm", "-f", "c1", "c2")
	e.must("network", "rm", "n1", "n2")
	for _, p := range nsPaths {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("container namespace %s still exists", p)
		}
	}
	if diff := e.before.Diff(e.host.Snapshot(t, e.root)); diff != "" {
		t.Errorf("ctnet left state behind:\n%s", diff)
	}
}

// 50 containers on one network get 50 distinct addresses in its subnet, other than
// the gateway, as the kernel holds them inside the containers.
func TestFiftyDistinctAddresses(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "big", "--subnet", "10.77.0.0/24")
	seen := map[string]string{"10.77.0.1": "the gateway"}
	var names []string
	for i := range 50 {
		name := fmt.Sprintf("c%02d", i)
		e.runDetached("--name", name, "--network", "big", "--", "sleep", "600")
		ip := e.kernelAddr(name, "eth0")
		if !strings.HasPrefix(ip, "10.77.0.") {
			t.Errorf("%s got %s, outside 10.77.0.0/24", name, ip)
		}
		if other, dup := seen[ip]; dup {
			t.Errorf("%s and %s both hold %s", name, other, ip)
		}
		seen[ip] = name
		names = append(names, name)
	}
	e.must(append([]string{"rm", "-f"}, names...)...)
	e.must("network", "rm", "big")
}

// Networks whose subnet overlaps another network or a host route are refused,
// naming what they clash with.
func TestOverlappingSubnetsRefused(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "first", "--subnet", "10.50.0.0/16")
	if out, err := e.hostRun("ip", "route", "add", "10.60.0.0/24", "via", lab.WANIP); err != nil {
		t.Fatalf("add host route: %v: %s", err, out)
	}
	cases := []struct{ subnet, mention string }{
		{"10.50.3.0/24", "first"},
		{"10.0.0.0/8", "first"},
		{"10.60.0.128/25", "10.60.0.0/24"},
		{"203.0.113.0/25", "uplink0"},
	}
	for _, c := range cases {
		r := e.ctnet("network", "create", "clash", "--subnet", c.subnet)
		if r.Code == 0 || !strings.Contains(r.Stderr, c.mention) {
			t.Errorf("network create --subnet %s: want a refusal naming %q, got %s", c.subnet, c.mention, r)
		}
	}
	// A network without --subnet avoids the host's routes and the other networks.
	e.must("network", "create", "auto")
	e.must("network", "rm", "first", "auto")
	e.hostRun("ip", "route", "del", "10.60.0.0/24")
}

// CMD's exit status passes through; --rm removes the record; the network is
// released when CMD ends.
func TestForegroundRun(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		args     []string
		wantCode int
	}{
		{[]string{"--name", "seven", "--", "sh", "-c", "exit 7"}, 7},
		{[]string{"--name", "missing", "--", "/nonexistent/command"}, 127},
		{[]string{"--rm", "--name", "gone", "--", "true"}, 0},
		{[]string{"--name", "killed", "--", "sh", "-c", "kill -9 $$"}, 137},
	}
	for _, c := range cases {
		r := e.ctnet(append([]string{"run"}, c.args...)...)
		if r.Code != c.wantCode {
			t.Errorf("run %v: exit %d, want %d (%s)", c.args, r.Code, c.wantCode, r)
		}
	}
	ps := e.must("ps", "-a")
	if !strings.Contains(ps, "Exited (7)") {
		t.Errorf("ps -a should list seven as Exited (7):\n%s", ps)
	}
	if strings.Contains(ps, "gone") {
		t.Errorf("--rm container still listed:\n%s", ps)
	}
	links := e.linksIn(nil)
	if _, ok := links["ctnet0"]; !ok {
		t.Errorf("the host's links lack the bridge ctnet0: %v", slices.Collect(maps.Keys(links)))
	}
	if veths := ctnetVeths(links); len(veths) > 0 {
		t.Errorf("exited containers still have veths: %v", veths)
	}
	e.must("rm", "seven", "missing", "killed")
	e.must("network", "rm", "bridge")
}

// A container whose processes were all killed behind ctnet's back reads as exited,
// and rm frees its resources.
func TestKilledBehindCtnetsBack(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "victim", "--", "sleep", "600")
	c := e.inspect("victim")
	if veths := ctnetVeths(e.linksIn(nil)); !slices.Equal(veths, []string{c.Networks[0].HostVeth}) {
		t.Fatalf("the running victim's veth: the host has %v, want %s", veths, c.Networks[0].HostVeth)
	}
	for _, pid := range []int{c.Supervisor.PID, c.Process.PID} {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if !eventually(func() bool { return strings.Contains(e.must("ps", "-a"), "Exited") }) {
		t.Fatalf("ps -a does not show the killed container as exited:\n%s", e.must("ps", "-a"))
	}
	e.must("rm", "victim")
	if veths := ctnetVeths(e.linksIn(nil)); len(veths) > 0 {
		t.Errorf("rm left the veths %v", veths)
	}
	e.must("network", "rm", "bridge")
}

// connect adds eth1 on another network; disconnect takes it away.
func TestConnectDisconnect(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "front", "--subnet", "10.81.0.0/24")
	e.must("network", "create", "back", "--subnet", "10.82.0.0/24")
	e.runDetached("--name", "app", "--network", "front", "--", "sleep", "600")
	e.runDetached("--name", "db", "--network", "back", "--", "sleep", "600")
	out := e.must("network", "connect", "back", "app")
	if !strings.HasPrefix(out, "eth1 10.82.0.") {
		t.Fatalf("connect: want eth1 with an address in 10.82.0.0/24, got %q", out)
	}
	if held := e.linksIn(lab.InNetNS(e.inspect("app").NetNS))["eth1"].ipv4(); len(held) != 1 || out != "eth1 "+held[0]+"\n" {
		t.Errorf("connect said %q, app's eth1 holds %v", out, held)
	}
	if !pingOK(e.containerRun("app"), e.kernelAddr("db", "eth0")) {
		t.Errorf("app cannot reach db over its new interface")
	}
	e.must("network", "disconnect", "back", "app")
	links := e.linksIn(lab.InNetNS(e.inspect("app").NetNS))
	if _, ok := links["eth1"]; ok {
		t.Errorf("eth1 still present after disconnect")
	}
	if _, ok := links["eth0"]; !ok {
		t.Errorf("disconnect from back took app's eth0 on front too")
	}
	e.must("rm", "-f", "app", "db")
	e.must("network", "rm", "front", "back")
}

// stop ends the process and releases the network; exec runs inside and passes the
// exit status through; inspect shows the article's inspect-net-stack view.
func TestStopExecInspect(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "svc", "--hostname", "svc-host", "--", "sleep", "600")
	if r := e.ctnet("exec", "svc", "--", "sh", "-c", "hostname; ip -o -4 addr show eth0; exit 3"); r.Code != 3 ||
		!strings.Contains(r.Stdout, "svc-host") || !strings.Contains(r.Stdout, e.ip("svc")) {
		t.Errorf("exec: want hostname svc-host, eth0's address and status 3, got %s", r)
	}
	table := e.must("inspect", "svc")
	for _, want := range []string{"Links (inside the container)", "eth0", "Routes", "default", "Neighbours", "172.17.0.1"} {
		if !strings.Contains(table, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, table)
		}
	}
	veth := e.inspect("svc").Networks[0].HostVeth
	if veths := ctnetVeths(e.linksIn(nil)); !slices.Equal(veths, []string{veth}) {
		t.Errorf("the running svc's veth: the host has %v, want %s", veths, veth)
	}
	start := time.Now()
	e.must("stop", "svc")
	if d := time.Since(start); d > 9*time.Second {
		t.Errorf("stop waited %v for sleep, which dies on SIGTERM", d)
	}
	if c := e.inspect("svc"); c.State != "exited" {
		t.Errorf("after stop: state %q, want exited", c.State)
	}
	if veths := ctnetVeths(e.linksIn(nil)); len(veths) > 0 {
		t.Errorf("stop left the veths %v", veths)
	}
	e.must("rm", "svc")
	e.must("network", "rm", "bridge")
}

// ctnetVeths lists the veths among links that are tagged as ctnet's or in its group.
func ctnetVeths(links map[string]hostLink) []string {
	var out []string
	for name, l := range links {
		if l.LinkInfo.Kind == "veth" && l.ctnets() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// netnsInode identifies a container's namespace while it runs.
func (e *env) netnsInode(name string) uint64 {
	e.t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(e.inspect(name).NetNS, &st); err != nil {
		e.t.Fatal(err)
	}
	return st.Ino
}

// What a container's command leaves running in the background ends with the
// container: when the command exits, on rm -f, and on rm after its supervisor died.
func TestBackgroundProcessesEndWithContainer(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		end  func(name string)
	}{
		{"rm -f", func(name string) { e.must("rm", "-f", name) }},
		{"stop", func(name string) { e.must("stop", name); e.must("rm", name) }},
		{"supervisor killed, then rm", func(name string) {
			c := e.inspect(name)
			syscall.Kill(c.Supervisor.PID, syscall.SIGKILL)
			syscall.Kill(c.Process.PID, syscall.SIGKILL)
			if !eventually(func() bool { return !proc.Running(c.Process.PID) }) {
				t.Fatalf("%s's process %d outlives SIGKILL", name, c.Process.PID)
			}
			e.must("rm", name)
		}},
		{"command exits", func(name string) {
			// The foreground sleep is killed from outside: an exec'd killer would itself
			// be ended by the teardown it sets off.
			for _, pid := range proc.InNetNS(e.netnsInode(name)) {
				if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(cmdline) == "sleep\x00601\x00" {
					syscall.Kill(pid, syscall.SIGTERM)
				}
			}
			if !eventually(func() bool { return strings.Contains(e.must("ps", "-a"), "Exited") }) {
				t.Fatalf("%s is not shown exited after its command ended:\n%s", name, e.must("ps", "-a"))
			}
			e.must("rm", name)
		}},
	}
	for i, c := range cases {
		name := fmt.Sprintf("bg%d", i)
		e.runDetached("--name", name, "--", "sh", "-c", "sleep 600 & socat TCP-LISTEN:7000,fork SYSTEM:true & sleep 601")
		ino := e.netnsInode(name)
		if !eventually(func() bool { return len(proc.InNetNS(ino)) >= 4 }) {
			t.Fatalf("%s: want its 4 processes running before it ends (sh, two sleeps, socat), got %v", c.name, proc.InNetNS(ino))
		}
		c.end(name)
		if !eventually(func() bool { return len(proc.InNetNS(ino)) == 0 }) {
			t.Errorf("%s: processes left in the container's namespace: %v", c.name, proc.InNetNS(ino))
			for _, pid := range proc.InNetNS(ino) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	e.must("network", "rm", "bridge")
}

// logs prints what a detached container wrote to stdout and stderr, each on its
// own, follows it with -f until the container exits, keeps it until rm, and refuses
// a container whose output went to a terminal.
func TestLogs(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "talker", "--", "sh", "-c", "echo one; echo two >&2; sleep 1; echo three")
	const want, wantErr = "one\nthree\n", "two\n"
	if r := e.ctnet("logs", "-f", "talker"); r.Code != 0 || r.Stdout != want || r.Stderr != wantErr {
		t.Errorf("logs -f: want the whole output, %q on stdout and %q on stderr, once the container exits, got %s", want, wantErr, r)
	}
	if c := e.inspect("talker"); c.State != "exited" {
		t.Errorf("logs -f returned while talker is %s", c.State)
	}
	if r := e.ctnet("logs", "talker"); r.Code != 0 || r.Stdout != want || r.Stderr != wantErr {
		t.Errorf("logs after exit: got %s, want %q and %q", r, want, wantErr)
	}
	e.must("run", "--name", "foreground", "--", "true")
	if r := e.ctnet("logs", "foreground"); r.Code == 0 || !strings.Contains(r.Stderr, "not started with -d") {
		t.Errorf("logs of a foreground container: want an error that says it was not started with -d, got %s", r)
	}
	if r := e.ctnet("logs", "nosuch"); r.Code == 0 || !strings.Contains(r.Stderr, "nosuch") {
		t.Errorf("logs of an unknown container: want an error naming it, got %s", r)
	}
	e.must("rm", "talker", "foreground")
	e.must("network", "rm", "bridge")
}

// A container has its own resolv.conf, hosts and hostname, as Docker's do: --dns
// names its resolver (on the default network, which has no embedded DNS server),
// which it reaches through masquerade; --add-host and its own
// hostname resolve from its hosts file; exec sees the same files; the host's files
// and mounts stay as they were, and the container's mount namespace holds no copy of
// another container's namespace pin.
func TestContainerNameFiles(t *testing.T) {
	e := newEnv(t)
	hostMounts := func() string {
		out, _ := e.hostRun("sh", "-c", "grep -c -E ' /etc/(resolv.conf|hosts|hostname) ' /proc/self/mountinfo; md5sum /etc/resolv.conf /etc/hosts")
		return out
	}
	before := hostMounts()
	e.runDetached("--name", "earlier", "--", "sleep", "600")
	resolver := e.wan.ListenUDP(t, lab.WANIP+":53")
	go serveDNS(resolver, "svc.test.", "198.51.100.77")
	e.runDetached("--name", "named", "--hostname", "web1", "--dns", lab.WANIP,
		"--add-host", "db.internal:192.0.2.5", "--", "sleep", "600")
	ip := e.ip("named")
	cases := []struct{ name, want string }{
		{"svc.test", "198.51.100.77"}, // through the resolver in the wan
		{"db.internal", "192.0.2.5"},  // --add-host
		{"web1", ip},                  // its own hostname
		{"localhost", "127.0.0.1"},
	}
	for _, c := range cases {
		r := e.ctnet("exec", "named", "--", "getent", "ahostsv4", c.name)
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, c.want+" ") {
			t.Errorf("getent ahostsv4 %s in the container: want %s, got %s", c.name, c.want, r)
		}
	}
	if r := e.ctnet("exec", "named", "--", "cat", "/etc/resolv.conf", "/etc/hostname"); !strings.Contains(r.Stdout, "nameserver "+lab.WANIP+"\n") ||
		!strings.HasSuffix(r.Stdout, "web1\n") {
		t.Errorf("the container's resolv.conf and hostname: want nameserver %s and web1, got %s", lab.WANIP, r)
	}
	if after := hostMounts(); after != before {
		t.Errorf("the host's files or mounts changed while a container ran:\nbefore %s\nafter  %s", before, after)
	}
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", e.inspect("named").Process.PID))
	if err != nil || strings.Contains(string(mounts), " "+e.root+"/netns/") || !strings.Contains(string(mounts), " /etc/resolv.conf ") {
		t.Errorf("the container's mounts: want /etc/resolv.conf and no copy of ctnet's namespace pins (%v):\n%s", err, mounts)
	}
	for _, bad := range [][]string{
		{"--dns", "203.0.113.2:53"},
		{"--dns", "nameserver"},
		{"--add-host", "db.internal"},
		{"--add-host", "-bad-:192.0.2.5"},
		{"--network", "host", "--dns", "203.0.113.2"},
		{"--network", "container:named", "--add-host", "db:192.0.2.5"},
	} {
		if r := e.ctnet(append(append([]string{"run", "--rm"}, bad...), "--", "true")...); r.Code == 0 || !strings.Contains(r.Stderr, "--") {
			t.Errorf("run %v: want a refusal that names the flag, got %s", bad, r)
		}
	}
	e.must("rm", "-f", "named", "earlier")
	e.must("network", "rm", "bridge")
}
