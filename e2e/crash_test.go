package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/fault"
	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/proc"
)

// crashCase is a command killed after each of its kernel changes in turn.
type crashCase struct {
	name string
	// base makes what must survive every crash unchanged; setup makes the command's
	// precondition before every attempt.
	base, setup func(e *env)
	cmd         []string
	// atomic: killed before its commit, the command leaves the store as it was, and gc
	// puts the kernel back as it was. rm -f is not: it kills the container's process
	// before its first kernel change; nor is gc.
	atomic bool
	// done tells whether the store shows the command's whole effect, as it must
	// after a kill past the commit.
	done func(st storeState) bool
	// gcSays: a kill at a step matching one of these leaves a state gc reports with
	// the matching line (the real kills that make what gc_test.go makes by hand).
	// Each must happen at some k.
	gcSays []stepReport
	// repaired: another ctnet process (the killed container's supervisor) may release
	// the container before gc runs, leaving gc nothing to do.
	repaired bool
	// retry: besides gc, running the command again must repair a crash (removals).
	retry bool
	// wantErr: the command fails, saying this, once it has made some changes: its
	// undo runs, and is killed in turn.
	wantErr string
}

// stepReport is a report line gc must print after a kill at a step.
type stepReport struct{ step, line string }

var (
	untaggedBridge = stepReport{`^create bridge \S+ untagged$`, `^removed interface \S+: ctnet made it and was interrupted before tagging it$`}
	untaggedVeth   = stepReport{`^create veth \S+ untagged$`, `^removed interface vc\S+: ctnet made it and was interrupted before tagging it$`}
	untaggedIFB    = stepReport{`^create ifb \S+ untagged$`, `^removed interface ib\S+: ctnet made it and was interrupted before tagging it$`}
	forwardingOff  = stepReport{`^store commit$`, `^turned IPv4 forwarding on again: networks need it$`}
	// IPv6 forwarding goes on after IPv4's and the host's accept_ra=2.
	forwarding6Off = stepReport{`^(store commit|enable IPv4 forwarding|keep router advertisements on the host's interfaces)$`,
		`^turned IPv6 forwarding on again: networks with IPv6 need it$`}
)

func keepNetwork(e *env) {
	e.must("network", "create", "keep", "--subnet", "10.66.0.0/24")
	e.runDetached("--name", "k1", "--network", "keep", "-p", "8080:80", "--", "sleep", "600")
	e.runDetached("--name", "k2", "--network", "keep", "--", "sleep", "600")
}

// keepMacvlan is keepNetwork with a macvlan network on a segment and a container on it.
func keepMacvlan(e *env) {
	keepNetwork(e)
	addSegment(e.t, e)
	e.must("network", "create", "lan", "-d", "macvlan", "--parent", "lan0", "--subnet", segmentSubnet, "--gateway", segmentRouter)
	e.runDetached("--name", "k3", "--network", "lan", "--", "sleep", "600")
}

func nothing(*env) {}

// TestCrash kills ctnet with SIGKILL right after its k-th kernel change, for every k
// until the command completes, during run, rm, network create/rm, connect,
// disconnect and gc itself. After every kill, `ctnet gc` must report what it
// repaired, one line per object, leave the kernel exactly as the store describes
// (checked with iproute2 and nft) and a second gc nothing to do; an atomic command
// leaves store and kernel as they were before it; the containers and networks that
// existed before keep their records and their kernel objects.
func TestCrash(t *testing.T) {
	cases := []crashCase{
		{name: "run -d on a new default network", base: keepNetwork, setup: nothing, atomic: true,
			gcSays: []stepReport{untaggedBridge, untaggedVeth},
			cmd:    []string{"run", "-d", "--name", "victim", "-p", "9090:80", "--", "sleep", "600"}},
		{name: "run -d", base: keepNetwork, setup: nothing, atomic: true, gcSays: []stepReport{untaggedVeth},
			cmd: []string{"run", "-d", "--name", "victim", "--network", "keep", "-p", "9090:80", "-p", "9091:81/udp", "--", "sleep", "600"}},
		{name: "run -d with bandwidth limits", base: keepNetwork, setup: nothing, atomic: true, gcSays: []stepReport{untaggedVeth, untaggedIFB},
			cmd: []string{"run", "-d", "--name", "victim", "--network", "keep", "--ingress-rate", "20M", "--egress-rate", "10M", "--", "sleep", "600"}},
		{name: "rm -f with bandwidth limits", base: keepNetwork, repaired: true, retry: true,
			setup: func(e *env) {
				e.runDetached("--name", "victim", "--network", "keep", "--egress-rate", "10M", "--", "sleep", "600")
			},
			cmd: []string{"rm", "-f", "victim"}},
		{name: "run -d on a macvlan network", base: keepMacvlan, setup: nothing, atomic: true,
			cmd: []string{"run", "-d", "--name", "victim", "--network", "lan", "--", "sleep", "600"}},
		{name: "rm -f on a macvlan network", base: keepMacvlan, repaired: true, retry: true,
			setup: func(e *env) { e.runDetached("--name", "victim", "--network", "lan", "--", "sleep", "600") },
			cmd:   []string{"rm", "-f", "victim"}},
		{name: "run --rm", base: keepNetwork, setup: nothing, atomic: true,
			cmd: []string{"run", "--rm", "--name", "victim", "--network", "keep", "-p", "9090:80", "--", "true"}},
		{name: "run refused after its first changes", atomic: true,
			base: func(e *env) {
				keepNetwork(e)
				listener := e.host.Command(e.t.Context(), "socat", "TCP-LISTEN:8090,reuseaddr,fork", "SYSTEM:true")
				if err := listener.Start(); err != nil {
					e.t.Fatal(err)
				}
				e.t.Cleanup(func() { listener.Process.Kill(); listener.Wait() })
				if !eventually(func() bool { out, _ := e.hostRun("ss", "-ltn"); return strings.Contains(out, ":8090") }) {
					e.t.Fatal("the host's socat does not listen on 8090")
				}
			},
			setup:   nothing,
			cmd:     []string{"run", "-d", "--name", "victim", "--network", "keep", "-p", "8090:80", "--", "sleep", "600"},
			wantErr: "8090"},
		{name: "rm -f", base: keepNetwork, repaired: true, retry: true,
			setup: func(e *env) {
				e.must("network", "create", "extra", "--subnet", "10.67.0.0/24")
				e.runDetached("--name", "victim", "--network", "keep", "-p", "9090:80", "--", "sleep", "600")
				e.must("network", "connect", "extra", "victim")
			},
			cmd: []string{"rm", "-f", "victim"}},
		{name: "network create", base: keepNetwork, setup: nothing, atomic: true, gcSays: []stepReport{untaggedBridge},
			cmd: []string{"network", "create", "extra"}},
		{name: "network create first", base: nothing, setup: nothing, atomic: true,
			done:   func(st storeState) bool { return len(st.Networks) == 1 && st.Networks[0].Name == "first" },
			gcSays: []stepReport{untaggedBridge, forwardingOff},
			cmd:    []string{"network", "create", "first"}},
		{name: "network create first, IPv6", base: nothing, setup: nothing, atomic: true,
			done:   func(st storeState) bool { return len(st.Networks) == 1 && st.Networks[0].Name == "first" },
			gcSays: []stepReport{untaggedBridge, forwardingOff, forwarding6Off},
			cmd:    []string{"network", "create", "first", "--ipv6"}},
		{name: "run -d, IPv6", base: keepNetwork, atomic: true, gcSays: []stepReport{untaggedVeth},
			setup: func(e *env) { e.must("network", "create", "dual", "--ipv6") },
			cmd:   []string{"run", "-d", "--name", "victim", "--network", "dual", "-p", "9090:80", "--", "sleep", "600"}},
		{name: "network rm last, IPv6", base: nothing, atomic: true, retry: true,
			setup: func(e *env) { e.must("network", "create", "only", "--ipv6") },
			cmd:   []string{"network", "rm", "only"}},
		{name: "network rm", base: keepNetwork, atomic: true, retry: true,
			setup: func(e *env) { e.must("network", "create", "extra") },
			cmd:   []string{"network", "rm", "extra"}},
		{name: "network rm last", base: nothing, atomic: true, retry: true,
			setup: func(e *env) { e.must("network", "create", "only") },
			cmd:   []string{"network", "rm", "only"}},
		{name: "network rm -f with a running container", base: keepNetwork, atomic: true, retry: true,
			setup: func(e *env) {
				e.must("network", "create", "extra")
				e.runDetached("--name", "victim", "--network", "extra", "-p", "9090:80", "--", "sleep", "600")
			},
			cmd: []string{"network", "rm", "-f", "extra"}},
		{name: "connect", base: keepNetwork, atomic: true, gcSays: []stepReport{untaggedVeth},
			setup: func(e *env) {
				e.must("network", "create", "extra")
				e.runDetached("--name", "victim", "--network", "keep", "--", "sleep", "600")
			},
			cmd: []string{"network", "connect", "extra", "victim"}},
		{name: "disconnect", base: keepNetwork, atomic: true, retry: true,
			setup: func(e *env) {
				e.must("network", "create", "extra")
				e.runDetached("--name", "victim", "--network", "keep", "--", "sleep", "600")
				e.must("network", "connect", "extra", "victim")
			},
			cmd: []string{"network", "disconnect", "extra", "victim"}},
		{name: "gc", base: keepNetwork,
			setup: func(e *env) {
				e.must("network", "create", "extra")
				e.runDetached("--name", "victim", "--network", "extra", "-p", "9090:80", "--", "sleep", "600")
				e.must("network", "connect", "keep", "victim")
				e.killContainer("victim")
				bridge := ""
				for _, n := range e.store().Networks {
					if n.Name == "extra" {
						bridge = n.Bridge
					}
				}
				e.host.MustRun(e.t, "ip", "link", "del", bridge)
			},
			cmd: []string{"gc"}},
		{name: "gc reshaping a container", base: keepNetwork,
			gcSays: []stepReport{{`^create ifb \S+ untagged$`, `^reconnected container victim to network keep `}},
			setup: func(e *env) {
				e.runDetached("--name", "victim", "--network", "keep", "--egress-rate", "10M", "--", "sleep", "600")
				victim, _ := e.store().container("victim")
				e.host.MustRun(e.t, "ip", "link", "del", victim.Networks[0].IFB)
				// As below: a container to release, so that every kill before the commit
				// leaves gc something to report.
				e.runDetached("--name", "dead", "--network", "keep", "--", "sleep", "600")
				e.killContainer("dead")
			},
			cmd: []string{"gc"}},
		{name: "gc reconnecting a container", base: keepNetwork,
			gcSays: []stepReport{{`^create veth \S+ untagged$`, `^reconnected container victim to network keep `}},
			setup: func(e *env) {
				e.runDetached("--name", "victim", "--network", "keep", "--", "sleep", "600")
				victim, _ := e.store().container("victim")
				e.host.MustRun(e.t, "ip", "link", "del", victim.Networks[0].HostVeth)
				// A container to release as well: its record changes only with the
				// commit, so every kill before it leaves gc something to report.
				e.runDetached("--name", "dead", "--network", "keep", "--", "sleep", "600")
				e.killContainer("dead")
			},
			cmd: []string{"gc"}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			c.base(e)
			base := crashBase{store: e.store(), kernel: e.kernelState()}
			repairs := []string{"gc"}
			if c.retry {
				repairs = append(repairs, "retry")
			}
			sweeps := map[string]*crashSweep{}
			for _, repair := range repairs {
				sweeps[repair] = &crashSweep{steps: map[string]int{}, gcSaid: map[string]bool{}}
			}
			kills := 0
			for k := 1; ; k++ {
				if k > 100 {
					t.Fatalf("%s made more than 100 kernel changes without completing", c.name)
				}
				completed := false
				for _, repair := range repairs {
					killed := e.crashOnce(t, c, k, repair, base, sweeps[repair])
					completed = !killed
					if killed {
						kills++
					}
				}
				if completed {
					break
				}
			}
			if kills == 0 {
				t.Fatalf("ctnet %s completed without a kernel change to kill it after", strings.Join(c.cmd, " "))
			}
			for _, want := range c.gcSays {
				if !sweeps["gc"].gcSaid[want.step] {
					t.Errorf("no kill at a step matching %q: the crash point is missing; steps killed at: %v", want.step, sweeps["gc"].steps)
				}
			}
			e.removeAll()
		})
	}
}

type crashBase struct {
	store  storeState
	kernel lab.Snapshot
}

// crashSweep is what the kills of one case and repair, k after k, have shown.
type crashSweep struct {
	steps     map[string]int  // the step each kill stopped at, to its k
	committed bool            // a kill was past the store's commit
	gcSaid    map[string]bool // the gcSays steps a kill stopped at
}

var randomID = regexp.MustCompile(`[0-9a-f]{8,}`)

// killedAt reads the marker a kill at crash point k writes: the step's name, or ""
// if the command was not killed by its crash point.
func killedAt(t *testing.T, marker string, k int) string {
	t.Helper()
	b, err := os.ReadFile(marker)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	n, step, ok := strings.Cut(strings.TrimSuffix(string(b), "\n"), " ")
	if !ok || strings.Contains(step, "\n") || n != strconv.Itoa(k) || step == "" {
		t.Fatalf("the kill marker reads %q, want one line \"%d STEP\"", b, k)
	}
	return step
}

// crashOnce runs the case's command killed after its k-th kernel change, repairs with
// gc or by running the command again, checks the result and goes back to the base
// state. It reports whether the command was killed.
func (e *env) crashOnce(t *testing.T, c crashCase, k int, repair string, base crashBase, sweep *crashSweep) bool {
	t.Helper()
	c.setup(e)
	preStore, preKernel := e.store(), e.kernelState()
	victim, _ := preStore.container("victim")
	cmd := strings.Join(c.cmd, " ")
	marker := filepath.Join(t.TempDir(), "kill-marker")
	r := e.host.CtnetEnv(t, e.root, []string{fmt.Sprintf("%s=%d", fault.EnvKillAfter, k), fault.EnvKillMarker + "=" + marker}, c.cmd...)
	step := killedAt(t, marker, k)
	// A detached run's supervisor is the one killed: the command says so.
	killed := r.Code == -1 || strings.Contains(r.Stderr, "signal: killed")
	switch {
	case step == "" && killed:
		t.Fatalf("ctnet %s (k=%d) was killed, but not at its crash point: %s", cmd, k, r)
	case step != "" && !killed:
		t.Fatalf("ctnet %s marked a kill at %q (k=%d) but did not die of it: %s", cmd, step, k, r)
	}
	if step == "" {
		if (r.Code == 0) != (c.wantErr == "") || !strings.Contains(r.Stderr, c.wantErr) {
			t.Fatalf("ctnet %s (not killed at k=%d): %s; want failure %q", cmd, k, r, c.wantErr)
		}
		if report := e.gc(); len(report) > 0 {
			t.Errorf("after ctnet %s completed, gc found work:\n%s", cmd, strings.Join(report, "\n"))
		}
		e.checkConsistent(t)
		e.backTo(t, base)
		return false
	}
	t.Logf("k=%d: killed after %q; repair with %s", k, step, repair)
	// Steps name objects by IDs that are new on every attempt.
	same := randomID.ReplaceAllString(step, "ID")
	if prev, ok := sweep.steps[same]; ok {
		t.Fatalf("the kills at k=%d and k=%d both stopped at %q: the crash points do not advance", prev, k, same)
	}
	sweep.steps[same] = k
	if strings.HasPrefix(step, "store commit") {
		sweep.committed = true
	}
	if c.repaired {
		waitGone(t, victim.Supervisor.PID)
	}
	// Whether the crash left anything to repair: a kill after the undo had reversed
	// everything, or after the commit, leaves nothing.
	untouched := e.store().raw == preStore.raw && preKernel.Diff(e.kernelState()) == ""
	if repair == "retry" && sweep.committed {
		// Past the commit the command is done: running it again is another command.
		repair = "gc"
	}
	var report []string
	switch repair {
	case "gc":
		// The kept containers' supervisors watch the firewall: a kill after a rebuild
		// wakes them, and they restore what the store still describes, the victim's
		// elements included. Between the snapshot and gc that would be a change the
		// report names and the snapshots do not show.
		resumeSupervisors := e.pauseSupervisors()
		defer resumeSupervisors() // should gc fail the test: the env's cleanup needs them running
		before := e.kernelObjects()
		report = e.gc()
		after := e.kernelObjects()
		resumeSupervisors()
		checkReport(t, report, before, after)
		for _, want := range c.gcSays {
			if !regexp.MustCompile(want.step).MatchString(step) {
				continue
			}
			sweep.gcSaid[want.step] = true
			if !slices.ContainsFunc(report, regexp.MustCompile(want.line).MatchString) {
				t.Errorf("k=%d: killed after %q, gc does not report a line matching %q:\n%s", k, step, want.line, strings.Join(report, "\n"))
			}
		}
	case "retry":
		if r := e.ctnet(c.cmd...); r.Code != 0 {
			t.Errorf("k=%d: ctnet %s again after the crash: %s", k, cmd, r)
		}
	}
	if again := e.gc(); len(again) > 0 {
		t.Errorf("k=%d: gc after the %s repair found work:\n%s", k, repair, strings.Join(again, "\n"))
	}
	e.checkConsistent(t)
	st := e.store()
	completed := sweep.committed
	if completed && c.done != nil && !c.done(st) {
		t.Errorf("k=%d: killed after the commit, the store lacks the command's effect:\n%s", k, st.raw)
	}
	if repair == "gc" && len(report) == 0 && !c.repaired && !completed && !untouched {
		t.Errorf("k=%d: gc after the crash reports nothing", k)
	}
	if c.atomic && repair == "gc" {
		switch {
		case st.raw == preStore.raw:
			if diff := preKernel.Diff(e.kernelState()); diff != "" {
				t.Errorf("k=%d: after gc the kernel is not as before the killed command:\n%s", k, diff)
			}
		case !completed:
			t.Errorf("k=%d: the killed command changed the store partly:\n--- before\n%s\n--- after\n%s", k, preStore.raw, st.raw)
		}
	}
	for _, want := range base.store.Containers {
		got, ok := st.container(want.Name)
		if !ok || got.State != want.State || fmt.Sprint(got.Networks) != fmt.Sprint(want.Networks) {
			t.Errorf("k=%d: container %s was %+v before, now %+v (present %t)", k, want.Name, want, got, ok)
		}
	}
	if t.Failed() {
		t.Fatalf("k=%d: gc report:\n%s", k, strings.Join(report, "\n"))
	}
	e.backTo(t, base)
	return true
}

// backTo removes every container and network that is not in base and checks that
// store and kernel are as they were.
func (e *env) backTo(t *testing.T, b crashBase) {
	t.Helper()
	base, kernel := b.store, b.kernel
	st := e.store()
	for _, c := range st.Containers {
		if _, ok := base.container(c.Name); !ok {
			e.must("rm", "-f", c.Name)
		}
	}
	for _, n := range st.Networks {
		if !strings.Contains(base.raw, `"name": "`+n.Name+`"`) {
			e.must("network", "rm", "-f", n.Name)
		}
	}
	if st := e.store(); st.raw != base.raw {
		t.Fatalf("the store is not back to how it was:\n--- before\n%s\n--- after\n%s", base.raw, st.raw)
	}
	if diff := kernel.Diff(e.kernelState()); diff != "" {
		t.Fatalf("the kernel is not back to how it was:\n%s", diff)
	}
}

// removeAll removes every container and network.
func (e *env) removeAll() {
	e.t.Helper()
	st := e.store()
	for _, c := range st.Containers {
		e.must("rm", "-f", c.Name)
	}
	for _, n := range st.Networks {
		e.must("network", "rm", "-f", n.Name)
	}
}

// SIGKILL at arbitrary moments, not only after kernel changes: during the store's
// commit, between the commit and the container's start, while a process waits for the
// lock. Whatever the moment, gc leaves store and kernel consistent, the containers and
// networks that existed before keep their records, and the state file stays readable.
func TestCrashAtRandomMoments(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	keepNetwork(e)
	base := crashBase{store: e.store(), kernel: e.kernelState()}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 2))
	ops := []struct {
		setup func()
		cmd   []string
	}{
		{func() {}, []string{"run", "--rm", "--name", "victim", "--network", "keep", "-p", "9090:80", "--", "sleep", "0.1"}},
		{func() {}, []string{"run", "--rm", "--name", "victim", "-p", "9090:80", "--", "sleep", "0.1"}},
		{func() { e.runDetached("--name", "victim", "--network", "keep", "--", "sleep", "600") }, []string{"rm", "-f", "victim"}},
		{func() {}, []string{"network", "create", "extra"}},
		{func() { e.must("network", "create", "extra") }, []string{"network", "rm", "extra"}},
		{func() { e.runDetached("--name", "victim", "--network", "keep", "--", "sleep", "600") }, []string{"network", "connect", "bridge", "victim"}},
	}
	const rounds = 30
	killed := 0
	for i := range rounds {
		op := ops[i%len(ops)]
		op.setup()
		delay := time.Duration(r.IntN(60_000)) * time.Microsecond
		cmd := e.host.Command(t.Context(), append([]string{lab.Binary(t), "--root", e.root}, op.cmd...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil && strings.Contains(err.Error(), "killed") {
			killed++
		}
		// The checks below are exact once the victim is settled: a killed rm -f may
		// have killed its process, and its supervisor then releases it; a killed
		// foreground run leaves its process to end on its own, unsupervised.
		// A SIGKILL that rm sent just before it died may take a moment to end the
		// process.
		if c, ok := e.store().container("victim"); ok {
			deadline := time.Now().Add(500 * time.Millisecond)
			for c.Process.PID > 0 && proc.Running(c.Process.PID) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			switch {
			case c.Process.PID > 0 && !proc.Running(c.Process.PID):
				waitGone(t, c.Supervisor.PID)
			case !proc.Running(c.Supervisor.PID):
				// Its process may not even be recorded yet: wait until nothing runs in
				// its namespace.
				var st syscall.Stat_t
				if syscall.Stat(c.NetNS, &st) == nil && !eventually(func() bool { return len(proc.InNetNS(st.Ino)) == 0 }) {
					t.Fatalf("round %d: processes %v outlive their container's supervisor", i, proc.InNetNS(st.Ino))
				}
			}
		}
		report := e.gc()
		if again := e.gc(); len(again) > 0 {
			t.Errorf("round %d (%s killed after %v): a second gc found work:\n%s", i, strings.Join(op.cmd, " "), delay, strings.Join(again, "\n"))
		}
		e.checkConsistent(t)
		st := e.store()
		for _, want := range base.store.Containers {
			if got, ok := st.container(want.Name); !ok || got.State != want.State || fmt.Sprint(got.Networks) != fmt.Sprint(want.Networks) {
				t.Errorf("round %d: container %s was %+v before, now %+v (present %t)", i, want.Name, want, got, ok)
			}
		}
		if t.Failed() {
			t.Fatalf("round %d: ctnet %s killed after %v; gc report:\n%s", i, strings.Join(op.cmd, " "), delay, strings.Join(report, "\n"))
		}
		e.backTo(t, base)
	}
	t.Logf("%d of %d commands were killed before they finished", killed, rounds)
	if killed < rounds/3 {
		t.Errorf("only %d of %d commands were killed before they finished: the delays are too long to test anything", killed, rounds)
	}
	e.removeAll()
}
