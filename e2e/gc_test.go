package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/store"
)

// gc on a clean system prints nothing and changes nothing: on a fresh root, and with
// networks, running containers, published ports and a second interface.
func TestGCNothingToDo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := e.kernelState()
	if r := e.ctnet("gc"); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Errorf("gc on a fresh root: want no output, got %s", r)
	}
	if diff := before.Diff(e.kernelState()); diff != "" {
		t.Errorf("gc on a fresh root changed the kernel:\n%s", diff)
	}
	e.must("network", "create", "one", "--subnet", "10.71.0.0/24")
	e.must("network", "create", "two", "--internal")
	e.runDetached("--name", "a", "--network", "one", "-p", "8080:80", "-p", "127.0.0.1:5353:53/udp", "--", "sleep", "600")
	e.runDetached("--name", "b", "--network", "two", "--", "sleep", "600")
	e.must("network", "connect", "one", "b")
	e.runDetached("--name", "c", "--network", "container:a", "--", "sleep", "600")
	e.runDetached("--name", "d", "--network", "none", "--", "sleep", "600")
	e.must("run", "--name", "exited", "--network", "one", "--", "true")
	store, kernel := e.store(), e.kernelState()
	for range 2 {
		if r := e.ctnet("gc"); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
			t.Errorf("gc with nothing to do: want no output, got %s", r)
		}
	}
	if st := e.store(); st.raw != store.raw {
		t.Errorf("gc with nothing to do changed the store:\n--- before\n%s\n--- after\n%s", store.raw, st.raw)
	}
	if diff := kernel.Diff(e.kernelState()); diff != "" {
		t.Errorf("gc with nothing to do changed the kernel:\n%s", diff)
	}
	e.checkConsistent(t)
	e.must("rm", "-f", "c", "a", "b", "d", "exited")
	e.must("network", "rm", "one", "two")
}

// gc repairs what was done behind ctnet's back, one report line per object it
// changed, leaves kernel and store consistent, and leaves alone what is not ctnet's.
// Each case damages the sandbox with independent tools (or edits the store as a
// crash would leave it) and lists the report lines it expects, as patterns.
func TestGCRepairs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must("network", "create", "keep", "--subnet", "10.72.0.0/24")
	e.runDetached(append([]string{"--name", "k1", "--network", "keep", "-p", "8080:80", "--"}, peerServer(80)...)...)
	// Objects that are not ctnet's, some looking like them: gc must leave them alone.
	e.host.MustRun(t, "ip", "link", "add", "br-foreign", "type", "bridge")
	e.host.MustRun(t, "ip", "link", "add", "vcforeign0", "type", "veth", "peer", "name", "vcforeign1")
	e.host.MustRun(t, "ip", "link", "set", "vcforeign0", "alias", "not-ctnet:container:1234")
	e.host.MustRun(t, "nft", "add table inet other; add set inet other s { type ipv4_addr; }; add element inet other s { 10.72.0.9 }")
	defer e.host.Try("ip", "link", "del", "br-foreign")
	defer e.host.Try("ip", "link", "del", "vcforeign0")
	defer e.host.Try("nft", "delete", "table", "inet", "other")
	foreign := func() string {
		links, _ := e.hostRun("ip", "-o", "link", "show")
		nft, _ := e.hostRun("nft", "list", "table", "inet", "other")
		var out []string
		for _, l := range []string{"br-foreign", "vcforeign0", "vcforeign1"} {
			if !strings.Contains(links, " "+l+":") && !strings.Contains(links, " "+l+"@") {
				out = append(out, "link "+l)
			}
		}
		if !strings.Contains(nft, "10.72.0.9") {
			out = append(out, "table inet other")
		}
		return strings.Join(out, ", ")
	}

	victim := func(args ...string) storeContainer {
		e.runDetached(append([]string{"--name", "victim", "--network", "keep"}, append(args, "--", "sleep", "600")...)...)
		c, _ := e.store().container("victim")
		return c
	}
	var leftovers uint64 // the namespace of a container whose command left processes
	resumeSupervisors := func() {}
	cases := []struct {
		name   string
		damage func() (want []string) // patterns of the report's lines
		after  func()                 // further checks
	}{
		{
			name: "container processes killed",
			damage: func() []string {
				// The command leaves two processes behind when it is killed.
				e.runDetached("--name", "victim", "--network", "keep", "-p", "9090:80", "--", "sh", "-c", "sleep 600 & sleep 601 & wait")
				c, _ := e.store().container("victim")
				leftovers = e.netnsInode("victim")
				if !eventually(func() bool { return len(proc.InNetNS(leftovers)) == 3 }) {
					t.Fatalf("want 3 processes in the container, got %v", proc.InNetNS(leftovers))
				}
				e.killContainer("victim")
				return []string{
					`^released container victim \(` + c.ID[:12] + `\): its process is gone$`,
					`^removed interface ` + c.Networks[0].HostVeth + `: its container victim has exited$`,
					`^removed network namespace ` + regexp.QuoteMeta(c.NetNS) + `: its container victim has exited \(ended 2 processes left in it\)$`,
					`^released address ` + c.Networks[0].IP + ` on network keep: `,
					`^released host port tcp/9090: `,
					`^removed firewall element tcp \. 9090 : ` + c.Networks[0].IP + ` \. 80 of set ports_any in table inet ctnet`,
					`^removed firewall element "` + c.Networks[0].HostVeth + `" of set ports in table bridge ctnet`,
					`^removed firewall element "` + c.Networks[0].HostVeth + `" \. \S+ of set port_macs in table bridge ctnet`,
					`^removed firewall element "` + c.Networks[0].HostVeth + `" \. ` + c.Networks[0].IP + ` of set port_ips in table bridge ctnet`,
				}
			},
			after: func() {
				if c, ok := e.store().container("victim"); !ok || c.State != "exited" {
					t.Errorf("the released container should stay listed as exited, got %+v (present %t)", c, ok)
				}
				if !eventually(func() bool { return len(proc.InNetNS(leftovers)) == 0 }) {
					t.Errorf("processes left in the released container's namespace: %s", describeProcesses(proc.InNetNS(leftovers)))
				}
				e.must("rm", "victim")
			},
		},
		{
			name: "container veth deleted",
			damage: func() []string {
				c := victim()
				e.host.MustRun(t, "ip", "link", "del", c.Networks[0].HostVeth)
				return []string{`^reconnected container victim to network keep \(` + c.Networks[0].IP + `, interface ` + c.Networks[0].HostVeth + `\)$`}
			},
			after: func() {
				if ip := e.ip("victim"); !pingOK(e.hostRun, ip) {
					t.Errorf("the host cannot reach the reconnected container at %s", ip)
				}
				e.must("rm", "-f", "victim")
			},
		},
		{
			name: "bridge deleted under running containers",
			damage: func() []string {
				c := victim()
				k1, _ := e.store().container("k1")
				bridge := e.store().Networks[0].Bridge
				e.host.MustRun(t, "ip", "link", "del", bridge)
				return []string{
					`^recreated bridge ` + bridge + ` of network keep$`,
					`^reconnected container victim to network keep \(` + c.Networks[0].IP + `, interface ` + c.Networks[0].HostVeth + `\)$`,
					`^reconnected container k1 to network keep \(` + k1.Networks[0].IP + `, interface ` + k1.Networks[0].HostVeth + `\)$`,
				}
			},
			after: func() {
				for _, name := range []string{"k1", "victim"} {
					if ip := e.ip(name); !pingOK(e.hostRun, ip) {
						t.Errorf("the host cannot reach %s at %s over the recreated bridge", name, ip)
					}
				}
				if !pingOK(e.containerRun("victim"), e.ip("k1")) {
					t.Errorf("victim cannot reach k1 over the recreated bridge")
				}
				e.must("rm", "-f", "victim")
			},
		},
		{
			name: "attached namespace deleted",
			damage: func() []string {
				name := lab.RandomName("ctx-")
				if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
					t.Fatalf("ip netns add: %v: %s", err, out)
				}
				e.must("attach", "--netns", "/run/netns/"+name, "--name", "victim", "--network", "keep")
				c, _ := e.store().container("victim")
				if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
					t.Fatalf("ip netns del: %v: %s", err, out)
				}
				// The veth pair goes with the namespace, once the kernel has cleaned it up;
				// its firewall elements stay.
				if !eventually(func() bool { _, ok := e.linksIn(nil)[c.Networks[0].HostVeth]; return !ok }) {
					t.Fatalf("veth %s outlives its namespace", c.Networks[0].HostVeth)
				}
				return []string{
					`^released container victim \(` + c.ID[:12] + `\): its network namespace is gone$`,
					`^released address ` + c.Networks[0].IP + ` on network keep: `,
					`^removed firewall element "` + c.Networks[0].HostVeth + `" of set ports in table bridge ctnet`,
					`^removed firewall element "` + c.Networks[0].HostVeth + `" \. \S+ of set port_macs in table bridge ctnet`,
					`^removed firewall element "` + c.Networks[0].HostVeth + `" \. ` + c.Networks[0].IP + ` of set port_ips in table bridge ctnet`,
				}
			},
			after: func() { e.must("rm", "victim") },
		},
		{
			name: "objects nothing owns",
			damage: func() []string {
				const deadID = "deadbeef00000000000000000000000000000000000000000000000000000001"
				e.host.MustRun(t, "ip", "link", "add", "vcdeadbeef", "type", "veth", "peer", "name", "vcdeadbeefp")
				e.host.MustRun(t, "ip", "link", "set", "vcdeadbeef", "alias", "ctnet:container:"+deadID)
				e.host.MustRun(t, "ip", "link", "add", "ct-deadbeef", "type", "bridge")
				e.host.MustRun(t, "ip", "link", "set", "ct-deadbeef", "alias", "ctnet:network:"+deadID)
				e.host.MustRun(t, "nft", `add element bridge ctnet port_ips { "vcdeadbeef" . 10.72.0.200 }; add element inet ctnet ports_any { udp . 7777 : 10.72.0.200 . 77 }`)
				nsPath := filepath.Join(e.root, "netns", deadID)
				pinNamespace(t, nsPath)
				runtimeDir := filepath.Join(e.root, "containers", deadID[:12])
				if err := os.MkdirAll(runtimeDir, 0o700); err != nil {
					t.Fatal(err)
				}
				// A lease whose container record is gone, as a crash between two
				// transactions of an older ctnet could leave.
				editStore(t, e.root, func(tx *store.Tx) error {
					n, err := tx.Network("keep")
					if err != nil {
						return err
					}
					return tx.PutLease(n.ID, netip.MustParseAddr("10.72.0.201"), deadID)
				})
				return []string{
					`^removed interface vcdeadbeef: its container is gone$`,
					`^removed interface ct-deadbeef: its network no longer exists$`,
					`^removed network namespace ` + regexp.QuoteMeta(nsPath) + `: no container owns it$`,
					`^removed firewall element "vcdeadbeef" \. 10\.72\.0\.200 of set port_ips in table bridge ctnet: nothing owns it$`,
					`^removed firewall element udp \. 7777 : 10\.72\.0\.200 \. 77 of set ports_any in table inet ctnet: nothing owns it$`,
					`^released address 10\.72\.0\.201 on network keep: no container holds it$`,
					`^removed runtime files ` + regexp.QuoteMeta(runtimeDir) + `: no container$`,
				}
			},
			after: func() {},
		},
		{
			// What a crash between creating a link and tagging it leaves: links of
			// ctnet's device group without an alias. One nothing uses is removed; a
			// network's bridge and a container's veth are finished.
			name: "links left untagged",
			damage: func() []string {
				c := victim()
				veth := c.Networks[0].HostVeth
				bridge := e.store().Networks[0].Bridge
				e.host.MustRun(t, "ip", "link", "add", "ct-untagged", "group", ctnetGroup, "type", "bridge")
				e.host.MustRun(t, "ip", "link", "add", "vcuntagged", "group", ctnetGroup, "type", "veth", "peer", "name", "vcuntaggedp")
				e.host.MustRun(t, "ip", "link", "set", bridge, "alias", "")
				e.host.MustRun(t, "ip", "link", "set", veth, "alias", "")
				e.host.MustRun(t, "ip", "link", "set", veth, "group", ctnetGroup)
				return []string{
					`^removed interface ct-untagged: ctnet made it and was interrupted before tagging it$`,
					`^removed interface vcuntagged: ctnet made it and was interrupted before tagging it$`,
					`^finished bridge ` + bridge + ` of network keep: an interrupted command left it untagged$`,
					`^reconnected container victim to network keep \(` + c.Networks[0].IP + `, interface ` + veth + `\)$`,
				}
			},
			after: func() {
				if ip := e.ip("victim"); !pingOK(e.hostRun, ip) {
					t.Errorf("the host cannot reach the reconnected container at %s", ip)
				}
				e.must("rm", "-f", "victim")
			},
		},
		{
			name: "firewall tables deleted",
			damage: func() []string {
				// k1's supervisor would restore them at once (TestFirewallRepairedAfterFlush).
				resumeSupervisors = e.pauseSupervisors()
				e.host.MustRun(t, "nft", "delete table inet ctnet; delete table bridge ctnet")
				return []string{`^restored firewall table inet ctnet$`, `^restored firewall table bridge ctnet$`}
			},
			after: func() {
				resumeSupervisors()
				var got string
				if !eventually(func() bool { got = askPeer(e.wanRun, lab.HostUplinkIP, 8080); return got != "" }) {
					t.Errorf("k1's published port does not answer from the wan after the firewall was restored")
				} else if got != lab.WANIP {
					t.Errorf("k1 saw the wan client as %s, want %s", got, lab.WANIP)
				}
			},
		},
		{
			name: "forwarding turned off",
			damage: func() []string {
				e.host.Sysctl(t, "net.ipv4.ip_forward", "0")
				return []string{`^turned IPv4 forwarding on again: networks need it$`}
			},
			after: func() {},
		},
	}
	// The cases share the sandbox, in turn: no subtests, whose failures would have to
	// go through the env's test.
	for _, c := range cases {
		t.Logf("case %q", c.name)
		want := c.damage()
		before := e.kernelObjects()
		report := e.gc()
		after := e.kernelObjects()
		checkReport(t, report, before, after)
		matched := make([]bool, len(report))
		for _, pattern := range want {
			re := regexp.MustCompile(pattern)
			n := 0
			for i, l := range report {
				if re.MatchString(l) {
					n++
					matched[i] = true
				}
			}
			if n != 1 {
				t.Errorf("%s: %d report lines match %q, want 1", c.name, n, pattern)
			}
		}
		for i, l := range report {
			if !matched[i] {
				t.Errorf("%s: unexpected report line %q", c.name, l)
			}
		}
		if again := e.gc(); len(again) > 0 {
			t.Errorf("%s: a second gc found more work:\n%s", c.name, strings.Join(again, "\n"))
		}
		e.checkConsistent(t)
		if missing := foreign(); missing != "" {
			t.Errorf("%s: gc removed what is not ctnet's: %s", c.name, missing)
		}
		c.after()
		if t.Failed() {
			t.Fatalf("%s: gc report:\n%s", c.name, strings.Join(report, "\n"))
		}
	}
	e.must("rm", "-f", "k1")
	e.must("network", "rm", "keep")
}

// A recorded process whose PID now belongs to another process (same PID, another
// start time) is gone: ps shows the container exited, gc releases it, and rm -f does
// not signal the stranger.
func TestGCPIDReuse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.runDetached("--name", "victim", "-p", "9090:80", "--", "sleep", "600")
	c, _ := e.store().container("victim")
	e.killContainer("victim")
	stranger := exec.Command("sleep", "600")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stranger.Process.Kill(); stranger.Wait() }()
	// The record now names the stranger's PID with the dead processes' start times,
	// as if the kernel had reused their PIDs.
	editStore(t, e.root, func(tx *store.Tx) error {
		rec, err := tx.Container("victim")
		if err != nil {
			return err
		}
		rec.Process.PID, rec.Supervisor.PID = stranger.Process.Pid, stranger.Process.Pid
		return tx.PutContainer(rec)
	})
	if id, err := proc.Identify(stranger.Process.Pid); err != nil || id.StartTime == 0 {
		t.Fatalf("identify the stranger: %v", err)
	}
	if got := e.inspect("victim").State; got != "exited" {
		t.Errorf("a container whose PID was reused reads as %q, want exited", got)
	}
	report := e.gc()
	if len(report) == 0 || report[0] != "released container victim ("+c.ID[:12]+"): its process is gone" {
		t.Errorf("gc should release the container first, got:\n%s", strings.Join(report, "\n"))
	}
	e.checkConsistent(t)
	e.must("rm", "-f", "victim")
	if !proc.Running(stranger.Process.Pid) {
		t.Errorf("gc or rm -f killed the process that reused the container's PID")
	}
	e.must("network", "rm", "bridge")
}

// editStore changes the state database directly, under ctnet's lock, as a crash or an
// older version could have left it.
func editStore(t *testing.T, root string, fn func(tx *store.Tx) error) {
	t.Helper()
	s, err := store.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// pinNamespace makes a network namespace pinned by a bind mount at path, as ctnet's
// own are, with no process in it.
func pinNamespace(t *testing.T, path string) {
	t.Helper()
	name := lab.RandomName("ctp-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	if err := os.WriteFile(path, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", "/run/netns/"+name, path).CombinedOutput(); err != nil {
		t.Fatalf("mount --bind: %v: %s", err, out)
	}
}

// Commands that need a consistent view do the part of gc they need themselves: run
// takes the address, --ip and published port of containers whose process died, and
// network rm removes a network whose containers all died, without gc or --force.
func TestGCWhereNeeded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A /29 has five addresses besides the gateway.
	e.must("network", "create", "small", "--subnet", "10.78.0.0/29")
	var dead []storeContainer
	for i := range 5 {
		name := "dead" + strconv.Itoa(i)
		args := []string{"--name", name, "--network", "small"}
		if i == 0 {
			args = append(args, "-p", "8080:80")
		}
		e.runDetached(append(args, "--", "sleep", "600")...)
		c, _ := e.store().container(name)
		dead = append(dead, c)
		e.killContainer(name)
	}
	e.runDetached("--name", "auto", "--network", "small", "--", "sleep", "600")
	e.runDetached("--name", "fixed", "--network", "small", "--ip", dead[3].Networks[0].IP, "--", "sleep", "600")
	e.runDetached("--name", "port", "--network", "small", "-p", "8080:80", "--", "sleep", "600")
	st := e.store()
	for _, name := range []string{"auto", "fixed", "port"} {
		if c, ok := st.container(name); !ok || c.State != "running" {
			t.Errorf("container %s: %+v, want running", name, c)
		}
	}
	e.checkConsistent(t)
	e.must("rm", "-f", "auto", "fixed", "port")
	// The network's remaining containers are dead: network rm needs no --force.
	e.must("network", "rm", "small")
	e.checkConsistent(t)
	if report := e.gc(); len(report) > 0 {
		t.Errorf("gc found work that run and network rm should have done:\n%s", strings.Join(report, "\n"))
	}
	for _, c := range dead {
		e.must("rm", c.Name)
	}
}

// A supervisor that dies between starting the container's process and recording it
// leaves a container whose process is unknown but runs in the container's namespace:
// that container is alive, and gc releases it only once nothing runs there.
func TestGCSupervisorDiedBeforeRecording(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.runDetached("--name", "victim", "--", "sleep", "600")
	c := e.inspect("victim")
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(c.Supervisor.PID, syscall.SIGKILL)
	waitGone(t, c.Supervisor.PID)
	editStore(t, e.root, func(tx *store.Tx) error {
		rec, err := tx.Container("victim")
		if err != nil {
			return err
		}
		rec.State, rec.Process = store.StateCreated, proc.ID{}
		rec.Supervisor = proc.ID{PID: gone.Process.Pid, StartTime: 1, BootID: proc.BootID()}
		return tx.PutContainer(rec)
	})
	if got := e.inspect("victim").State; got != "created" {
		t.Errorf("the container whose process runs unrecorded reads as %q, want created", got)
	}
	if report := e.gc(); len(report) > 0 {
		t.Errorf("gc released a container whose process still runs in its namespace:\n%s", strings.Join(report, "\n"))
	}
	e.checkConsistent(t)
	syscall.Kill(c.Process.PID, syscall.SIGKILL)
	waitGone(t, c.Process.PID)
	if report := e.gc(); len(report) == 0 || !strings.HasPrefix(report[0], "released container victim") {
		t.Errorf("gc should release the container once nothing runs in its namespace, got:\n%s", strings.Join(report, "\n"))
	}
	e.checkConsistent(t)
	e.must("rm", "victim")
	e.must("network", "rm", "bridge")
}

// A crash between making the namespace directory a mount point and pinning a
// namespace into it leaves the directory mounted and empty; gc unmounts it.
func TestGCReleasesEmptyPinDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := filepath.Join(e.root, "netns")
	e.must("network", "create", "one", "--subnet", "10.73.0.0/24") // makes the root's directories
	if out, err := exec.Command("mount", "--bind", dir, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount --bind %s: %v: %s", dir, err, out)
	}
	if report := e.gc(); !slices.Equal(report, []string{"unmounted " + dir + ": it holds no namespace"}) {
		t.Errorf("gc with an empty mounted namespace directory: want it unmounted, one line, got %q", report)
	}
	if m := lab.MountsUnder(e.root); len(m) > 0 {
		t.Errorf("mounts left under the root after gc: %v", m)
	}
	e.must("network", "rm", "one")
}

// describeProcesses names each process by its command line, state and parent, so that
// a failure says what was left, not only its PID.
func describeProcesses(pids []int) string {
	var out []string
	for _, pid := range pids {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		var state, parent string
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "State:"); ok {
				state = strings.TrimSpace(v)
			} else if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				parent = strings.TrimSpace(v)
			}
		}
		out = append(out, fmt.Sprintf("%d %q (%s, parent %s)", pid, strings.ReplaceAll(string(cmdline), "\x00", " "), state, parent))
	}
	return strings.Join(out, "; ")
}
