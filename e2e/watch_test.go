package e2e

import (
	"os"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
)

// After `nft flush ruleset` ctnet's tables come back without any ctnet command: a
// detached container's supervisor restores them, and where only attached containers
// run (no supervisor), `ctnet watch` does; twice in a row each, and once more after
// nftables.service's reload (`nft -f` of a file that begins with `flush ruleset`),
// whose own table stays. Real traffic shows the published port answering the wan, the
// way out masqueraded and the networks isolated again, and the bridge table
// (anti-spoofing) is back with its elements; so are its rules when only they are
// flushed. iptables-restore (iptables-nft) leaves ctnet's tables alone: nothing
// repairs them.
// With the supervisors, a `ctnet watch` runs too: each flush is repaired once, by the
// supervisor whose turn it is or by watch, and the other finds nothing to do (that
// the supervisors repair alone is TestSupervisorsTakeTurnsWatching's). `ctnet watch`
// ends on SIGTERM with nothing left.
func TestFirewallRepairedAfterFlush(t *testing.T) {
	for _, mode := range []string{"supervisors", "watch"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			serveIn(t, &e.wan.Sandbox, peerServer(9999)...)
			e.must("network", "create", "red", "--subnet", "10.91.0.0/24")
			e.must("network", "create", "blue", "--subnet", "10.92.0.0/24")
			var logs func() string // what the supervisors said
			var run func(name string) func(args ...string) (string, error)
			switch mode {
			case "supervisors":
				e.runDetached(append([]string{"--name", "web", "--network", "red", "-p", "8080:7000", "--"}, peerServer(7000)...)...)
				e.runDetached("--name", "other", "--network", "blue", "--", "sleep", "600")
				run = e.containerRun
				// ctnet's own lines are stderr records of a container's log.
				logs = func() string { return e.ctnet("logs", "web").Stderr + e.ctnet("logs", "other").Stderr }
			case "watch":
				names := map[string]string{"web": lab.RandomName("ctw-"), "other": lab.RandomName("ctw-")}
				for _, ns := range names {
					if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
						t.Fatalf("ip netns add: %v: %s", err, out)
					}
					defer exec.Command("ip", "netns", "del", ns).Run()
				}
				e.must("attach", "--netns", "/run/netns/"+names["web"], "--name", "web", "--network", "red", "-p", "8080:7000")
				e.must("attach", "--netns", "/run/netns/"+names["other"], "--name", "other", "--network", "blue")
				server := e.host.Command(t.Context(), append([]string{"ip", "netns", "exec", names["web"]}, peerServer(7000)...)...)
				if err := server.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() { server.Process.Kill(); server.Wait() }()
				run = func(name string) func(args ...string) (string, error) {
					return func(args ...string) (string, error) {
						return e.host.Try(append([]string{"ip", "netns", "exec", names[name]}, args...)...)
					}
				}
				logs = func() string { return "" }
			}
			out, err := os.Create(t.TempDir() + "/watch.out")
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			watch := e.host.Command(t.Context(), lab.Binary(t), "--root", e.root, "watch")
			watch.Stdout, watch.Stderr = out, out
			if err := watch.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if watch.ProcessState == nil {
					watch.Process.Kill()
					watch.Wait()
				}
			}()
			repairs := func() string { b, _ := os.ReadFile(out.Name()); return logs() + string(b) }
			webIP := e.kernelAddr("web", "eth0")
			if mode == "watch" {
				webIP = e.ip("web")
			}
			published := func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, 8080) == lab.WANIP }
			if !eventually(published) {
				t.Fatalf("the published port does not answer the wan before any flush")
			}
			bridgeTable := func() string { out, _ := e.hostRun("nft", "list", "table", "bridge", "ctnet"); return out }
			veths := []string{e.inspect("web").Networks[0].HostVeth, e.inspect("other").Networks[0].HostVeth}
			// nftables.service's reload: its configuration's first line flushes the
			// ruleset, in the batch that loads its own table, which stays.
			reload := t.TempDir() + "/nftables.conf"
			if err := os.WriteFile(reload, []byte("flush ruleset\ntable inet filter {\n\tchain forward { type filter hook forward priority 0; policy accept; }\n}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			flushes := [][]string{{"nft", "flush", "ruleset"}, {"nft", "flush", "ruleset"}, {"nft", "-f", reload}}
			for i, flush := range flushes {
				round := i + 1
				e.host.MustRun(t, flush...)
				flushed := time.Now()
				if !eventually(func() bool { return published() && strings.Contains(bridgeTable(), "port_macs") }) {
					t.Fatalf("flush %d: ctnet's tables were not restored:\n%s", round, e.host.MustRun(t, "nft", "list", "ruleset"))
				}
				t.Logf("flush %d: the published port answers again after %v", round, time.Since(flushed))
				if got := askPeer(run("other"), lab.WANIP, 9999); got != lab.HostUplinkIP {
					t.Errorf("flush %d: the wan sees a container as %q, want the host's %s (masquerade)", round, got, lab.HostUplinkIP)
				}
				if got := askPeer(e.hostRun, webIP, 7000); got == "" {
					t.Errorf("flush %d: the host does not reach the server on red", round)
				}
				if got := askPeer(run("other"), webIP, 7000); got != "" {
					t.Errorf("flush %d: a container on blue reaches one on red (seen as %s): networks are not isolated", round, got)
				}
				table := bridgeTable()
				for _, veth := range veths {
					if !strings.Contains(table, `"`+veth+`" . `) {
						t.Errorf("flush %d: the bridge table lacks %s's anti-spoofing elements:\n%s", round, veth, table)
					}
				}
				// The repairing watcher writes its report after the kernel has it, and a
				// second repair of one flush would show in the next round's count.
				restored := func() int { return strings.Count(repairs(), "restored firewall table inet ctnet") }
				eventually(func() bool { return restored() >= round })
				if n := restored(); n != round {
					t.Errorf("flush %d: the watchers reported %d repairs of table inet ctnet in all, want %d:\n%s", round, n, round, repairs())
				}
			}
			if out := e.host.MustRun(t, "nft", "list", "tables"); !strings.Contains(out, "table inet filter") {
				t.Errorf("the repair took the reload's own table away:\n%s", out)
			}
			e.host.MustRun(t, "nft", "delete", "table", "inet", "filter")
			// iptables-restore (iptables-nft) flushes the tables it names, ip filter and
			// ip nat, and no other: ctnet's stay and need no repair (the final count).
			restore := e.host.Command(t.Context(), "iptables-restore")
			restore.Stdin = strings.NewReader("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n")
			if out, err := restore.CombinedOutput(); err != nil {
				t.Fatalf("iptables-restore: %v: %s", err, out)
			}
			if !published() {
				t.Errorf("after iptables-restore the published port does not answer the wan:\n%s", e.host.MustRun(t, "nft", "list", "ruleset"))
			}
			e.host.MustRun(t, "nft", "delete", "table", "ip", "filter")
			e.host.MustRun(t, "nft", "delete", "table", "ip", "nat")
			// Rules alone, the anti-spoofing chain's, with every element left in place.
			e.host.MustRun(t, "nft", "flush", "chain", "bridge", "ctnet", "prerouting")
			if !eventually(func() bool { return strings.Contains(bridgeTable(), "anything else from a container port") }) {
				t.Errorf("the anti-spoofing rules were not restored:\n%s", bridgeTable())
			}
			if !eventually(func() bool {
				return strings.Contains(repairs(), "restored firewall rules of chain prerouting in table bridge ctnet")
			}) {
				t.Errorf("the watchers did not report restoring the anti-spoofing rules:\n%s", repairs())
			}
			if err := watch.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := watch.Wait(); err != nil {
				t.Errorf("ctnet watch on SIGTERM: %v\n%s", err, repairs())
			}
			// The last repair rebuilt tables that were there, deleting them first: the
			// watchers heard of that too, and found nothing to do.
			said := repairs()
			if n := strings.Count(said, "restored firewall rules of chain prerouting"); n != 1 {
				t.Errorf("the anti-spoofing rules were restored %d times, want once:\n%s", n, said)
			}
			if n := strings.Count(said, "restored firewall"); n != len(flushes)*2+1 {
				t.Errorf("the watchers reported %d repairs, want the %d flushes' two tables each and the flushed chain:\n%s", n, len(flushes), said)
			}
			e.must("rm", "-f", "web", "other")
			e.must("network", "rm", "red", "blue")
		})
	}
}

// pauseSupervisors stops the root's supervisors (SIGSTOP) at a moment none of them
// holds the root's lock, so that damage a test does to the firewall stays for gc or
// doctor to find: running, they would repair it at once. The returned function
// resumes them, once; what they were told meanwhile is then repaired, or finds
// nothing to do.
func (e *env) pauseSupervisors() (resume func()) {
	e.t.Helper()
	pids := processesOfRoot(lab.Binary(e.t), e.root)
	signal := func(sig syscall.Signal) {
		for _, pid := range pids {
			syscall.Kill(pid, sig)
		}
	}
	if !eventually(func() bool {
		signal(syscall.SIGSTOP)
		if exec.Command("flock", "-n", "-x", e.root+"/lock", "true").Run() == nil {
			return true
		}
		signal(syscall.SIGCONT)
		return false
	}) {
		e.t.Fatalf("the supervisors %v hold the root's lock", pids)
	}
	var once sync.Once
	return func() { once.Do(func() { signal(syscall.SIGCONT) }) }
}

// A root's supervisors take turns at watching the firewall: one holds the turn (a
// POSIX lock on the root's watch.lock) and repairs a flush, writing it to its
// container's log, while the others' logs stay silent; SIGKILL it, and another
// supervisor takes the turn and repairs the next flush, with nobody else watching
// (no `ctnet watch`). A container left running without its supervisor, rm removes.
func TestSupervisorsTakeTurnsWatching(t *testing.T) {
	e := newEnv(t)
	serveIn(t, &e.wan.Sandbox, peerServer(9999)...)
	e.must("network", "create", "red", "--subnet", "10.91.0.0/24")
	names := []string{"first", "second", "third"}
	supervisors := map[int]string{}
	for _, name := range names {
		e.runDetached("--name", name, "--network", "red", "--", "sleep", "600")
		supervisors[e.inspect(name).Supervisor.PID] = name
	}
	watcher := func() int { return watchTurnHolder(e.root) }
	masqueraded := func(name string) bool { return askPeer(e.containerRun(name), lab.WANIP, 9999) == lab.HostUplinkIP }
	for round := 1; round <= 2; round++ {
		var holder int
		if !eventually(func() bool { holder = watcher(); _, ok := supervisors[holder]; return ok }) {
			t.Fatalf("round %d: the watch turn is held by %d, not by one of the supervisors %v", round, holder, supervisors)
		}
		name := supervisors[holder]
		others := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == name })
		if !masqueraded(others[0]) {
			t.Fatalf("round %d: %s does not reach the wan masqueraded before the flush", round, others[0])
		}
		e.host.MustRun(t, "nft", "flush", "ruleset")
		if !eventually(func() bool { return masqueraded(others[0]) }) {
			t.Fatalf("round %d: ctnet's tables were not restored after the flush:\n%s", round, e.host.MustRun(t, "nft", "list", "ruleset"))
		}
		// ctnet's own lines are stderr records of a container's log.
		said := func(name string) string { return e.ctnet("logs", name).Stderr }
		if !eventually(func() bool { return strings.Contains(said(name), "restored firewall table inet ctnet") }) {
			t.Errorf("round %d: the watching supervisor (of %s) did not log the repair:\n%s", round, name, said(name))
		}
		for _, other := range others {
			if log := said(other); strings.Contains(log, "restored firewall") {
				t.Errorf("round %d: %s's supervisor repaired without the turn:\n%s", round, other, log)
			}
		}
		// The holder dies as in a crash; its container runs on without it.
		syscall.Kill(holder, syscall.SIGKILL)
		waitGone(t, holder)
		delete(supervisors, holder)
		e.must("rm", "-f", name)
		names = others
	}
	if !eventually(func() bool { _, ok := supervisors[watcher()]; return ok }) {
		t.Errorf("the last supervisor %v did not take the turn (held by %d)", supervisors, watcher())
	}
	e.must("rm", "-f", names[0])
	e.must("network", "rm", "red")
}

// The systemd unit in contrib/ starts `ctnet watch` from where the README installs
// ctnet, and systemd-analyze verifies it (with the test's binary in that place).
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../contrib/systemd/ctnet-watch.service")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const installed = "/usr/local/bin/ctnet"
	if !strings.Contains(string(readme), "-o "+path.Dir(installed)+"/ ./cmd/ctnet ") {
		t.Errorf("the README does not install ctnet into %s", path.Dir(installed))
	}
	if !strings.Contains(string(unit), "\nExecStart="+installed+" watch\n") {
		t.Errorf("the unit does not run %s watch:\n%s", installed, unit)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		lab.Missing(t, "needs systemd-analyze")
	}
	verify := func(unit string) (string, error) {
		file := t.TempDir() + "/ctnet-watch.service"
		if err := os.WriteFile(file, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", file).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(strings.ReplaceAll(string(unit), installed, lab.Binary(t))); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The control: a unit whose program is not there is refused.
	if _, err := verify(strings.ReplaceAll(string(unit), installed, t.TempDir()+"/ctnet")); err == nil {
		t.Errorf("systemd-analyze verify took a unit whose program does not exist")
	}
}

// watchTurnHolder is the supervisor holding the root's turn at watching the
// firewall, as /proc/locks names it, or 0.
func watchTurnHolder(root string) (pid int) {
	lockFile, err := os.Stat(root + "/watch.lock")
	if err != nil {
		return 0
	}
	ino := ":" + strconv.FormatUint(lockFile.Sys().(*syscall.Stat_t).Ino, 10)
	locks, _ := os.ReadFile("/proc/locks")
	for _, line := range strings.Split(string(locks), "\n") {
		if f := strings.Fields(line); len(f) >= 6 && f[1] == "POSIX" && strings.HasSuffix(f[5], ino) {
			pid, _ = strconv.Atoi(f[4])
		}
	}
	return pid
}

// An idle supervisor holds no nftables socket: the last close of one waits for
// nf_tables' release of any change that deleted something (an RCU grace period),
// and rm -f waits for the supervisor's exit. The supervisor watching the firewall
// holds its monitor's, which shows that the count sees such sockets.
func TestIdleSupervisorsHoldNoNFTablesSocket(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "idle", "--subnet", "10.93.0.0/24")
	var supervisors []int
	for _, name := range []string{"first", "second"} {
		e.runDetached("--name", name, "--network", "idle", "--", "sleep", "600")
		supervisors = append(supervisors, e.inspect(name).Supervisor.PID)
	}
	var holder int
	if !eventually(func() bool { holder = watchTurnHolder(e.root); return slices.Contains(supervisors, holder) }) {
		t.Fatalf("the watch turn is held by %d, not by one of the supervisors %v", holder, supervisors)
	}
	nftSockets := func(pid int) int {
		// Sockets of the netfilter protocol (12) in the host namespace, by inode.
		netfilter := map[string]bool{}
		for _, line := range strings.Split(e.host.MustRun(t, "cat", "/proc/net/netlink"), "\n") {
			if f := strings.Fields(line); len(f) >= 10 && f[1] == "12" {
				netfilter["socket:["+f[len(f)-1]+"]"] = true
			}
		}
		fds, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
		n := 0
		for _, fd := range fds {
			if target, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name()); netfilter[target] {
				n++
			}
		}
		return n
	}
	if !eventually(func() bool { return nftSockets(holder) > 0 }) {
		t.Fatalf("control: the watching supervisor %d holds no nftables socket", holder)
	}
	for _, pid := range supervisors {
		if pid == holder {
			continue
		}
		if !eventually(func() bool { return nftSockets(pid) == 0 }) {
			t.Errorf("the idle supervisor %d holds %d nftables sockets", pid, nftSockets(pid))
		}
	}
	e.must("rm", "-f", "first", "second")
	e.must("network", "rm", "idle")
}
