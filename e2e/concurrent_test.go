package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// burst runs every command at once, each in its own ctnet process, and returns the
// results in order.
func (e *env) burst(cmds [][]string) []lab.Result {
	e.t.Helper()
	results := make([]lab.Result, len(cmds))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, args := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = e.host.Ctnet(e.t, e.root, args...)
		}()
	}
	close(start)
	wg.Wait()
	return results
}

// 100 `run -d` at once on one network, with gc running among them and a few runs
// that really conflict (one name wanted five times), then 100 `rm -f` at once: every
// run succeeds but the conflicting ones, which fail saying so; the containers get
// 100 distinct addresses and interface names, and the kernel holds exactly them;
// nothing is left afterwards.
func TestConcurrentRunRm(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must("network", "create", "busy", "--subnet", "10.74.0.0/24")
	const n, dups, gcs = 100, 5, 4
	var cmds [][]string
	for i := range n {
		cmds = append(cmds, []string{"run", "-d", "--name", fmt.Sprintf("c%03d", i), "--network", "busy", "--", "sleep", "600"})
	}
	for range dups {
		cmds = append(cmds, []string{"run", "-d", "--name", "dup", "--network", "busy", "--", "sleep", "600"})
	}
	for range gcs {
		cmds = append(cmds, []string{"gc"})
	}
	results := e.burst(cmds)
	dupWins := 0
	for i, r := range results {
		switch {
		case i < n && r.Code != 0:
			t.Errorf("ctnet %s: %s", strings.Join(cmds[i], " "), r)
		case i >= n && i < n+dups && r.Code == 0:
			dupWins++
		case i >= n && i < n+dups && !strings.Contains(r.Stderr, "the name dup is already used by container"):
			t.Errorf("a run losing the name dup should say so, got %s", r)
		case i >= n+dups && (r.Code != 0 || r.Stdout != ""):
			t.Errorf("gc among the runs: want success with nothing to do, got %s", r)
		}
	}
	if dupWins != 1 {
		t.Errorf("%d runs named dup succeeded, want exactly 1", dupWins)
	}
	st := e.store()
	if len(st.Containers) != n+1 {
		t.Fatalf("%d containers after the burst, want %d", len(st.Containers), n+1)
	}
	addrs, veths := map[string]string{}, map[string]string{}
	subnet := netip.MustParsePrefix("10.74.0.0/24")
	for _, c := range st.Containers {
		if c.State != "running" || len(c.Networks) != 1 {
			t.Errorf("container %s: state %s with %d interfaces, want running with 1", c.Name, c.State, len(c.Networks))
			continue
		}
		a := c.Networks[0]
		if ip, err := netip.ParseAddr(a.IP); err != nil || !subnet.Contains(ip) {
			t.Errorf("container %s has address %q, outside %s", c.Name, a.IP, subnet)
		}
		if other, dup := addrs[a.IP]; dup {
			t.Errorf("containers %s and %s share the address %s", c.Name, other, a.IP)
		}
		if other, dup := veths[a.HostVeth]; dup {
			t.Errorf("containers %s and %s share the interface %s", c.Name, other, a.HostVeth)
		}
		addrs[a.IP], veths[a.HostVeth] = c.Name, c.Name
	}
	e.checkConsistent(t)
	// Each supervisor stays in the host's namespace: only the container's own
	// processes are in the container's (the supervisor starts the command from a
	// thread it moves there and back, whichever thread that is).
	host := nsInode(t, e.host.Path)
	for _, c := range st.Containers {
		if got := nsInode(t, fmt.Sprintf("/proc/%d/ns/net", c.Supervisor.PID)); got != host {
			t.Errorf("the supervisor %d of container %s is in network namespace %d, not the host's %d", c.Supervisor.PID, c.Name, got, host)
		}
	}

	cmds = nil
	for _, c := range st.Containers {
		cmds = append(cmds, []string{"rm", "-f", c.Name})
	}
	for range gcs {
		cmds = append(cmds, []string{"gc"})
	}
	for i, r := range e.burst(cmds) {
		// rm kills under the lock and commits the removal before releasing it: gc never
		// sees a container half removed.
		if r.Code != 0 || (cmds[i][0] == "gc" && r.Stdout != "") {
			t.Errorf("ctnet %s: %s", strings.Join(cmds[i], " "), r)
		}
	}
	if st := e.store(); len(st.Containers) > 0 {
		t.Errorf("%d containers remain after rm -f of all", len(st.Containers))
	}
	e.checkConsistent(t)
	if report := e.gc(); len(report) > 0 {
		t.Errorf("gc after the removals found work:\n%s", strings.Join(report, "\n"))
	}
	e.must("network", "rm", "busy")
}

// 20 `network create` at once without --subnet (and two wanting one name) pick 20
// distinct, non-overlapping subnets; 20 `network rm` at once remove them all.
func TestConcurrentNetworkCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 20
	var cmds [][]string
	for i := range n {
		cmds = append(cmds, []string{"network", "create", fmt.Sprintf("n%02d", i)})
	}
	cmds = append(cmds, []string{"network", "create", "twice"}, []string{"network", "create", "twice"})
	results := e.burst(cmds)
	twice := 0
	for i, r := range results {
		switch {
		case i < n && r.Code != 0:
			t.Errorf("ctnet %s: %s", strings.Join(cmds[i], " "), r)
		case i >= n && r.Code == 0:
			twice++
		case i >= n && !strings.Contains(r.Stderr, "network twice already exists"):
			t.Errorf("the second network create twice should say it exists, got %s", r)
		}
	}
	if twice != 1 {
		t.Errorf("%d of two network create twice succeeded, want 1", twice)
	}
	st := e.store()
	if len(st.Networks) != n+1 {
		t.Fatalf("%d networks, want %d", len(st.Networks), n+1)
	}
	var subnets []netip.Prefix
	for _, nw := range st.Networks {
		p, err := netip.ParsePrefix(nw.Subnet)
		if err != nil {
			t.Fatalf("network %s: subnet %q: %v", nw.Name, nw.Subnet, err)
		}
		for i, q := range subnets {
			if p.Overlaps(q) {
				t.Errorf("network %s's subnet %s overlaps %s of network %s", nw.Name, p, q, st.Networks[i].Name)
			}
		}
		subnets = append(subnets, p)
	}
	// The kernel agrees: one bridge per network holding its gateway, as ip shows it.
	e.checkConsistent(t)
	cmds = nil
	for _, nw := range st.Networks {
		cmds = append(cmds, []string{"network", "rm", nw.Name})
	}
	for i, r := range e.burst(cmds) {
		if r.Code != 0 {
			t.Errorf("ctnet %s: %s", strings.Join(cmds[i], " "), r)
		}
	}
	if st := e.store(); len(st.Networks) > 0 {
		t.Errorf("%d networks remain after removing all", len(st.Networks))
	}
	e.checkConsistent(t)
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
