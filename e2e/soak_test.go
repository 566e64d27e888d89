//go:build soak

// The soak runs only with -tags soak: go test -tags soak -run TestSoak -timeout 30m ./e2e/
// CTNET_SOAK_CYCLES=N makes it shorter (CI runs a few hundred cycles: scripts/test.sh).

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/network"
)

// soakCycles is how many cycles each soak makes: 1,000, or CTNET_SOAK_CYCLES.
func soakCycles(t *testing.T) int {
	t.Helper()
	v := os.Getenv("CTNET_SOAK_CYCLES")
	if v == "" {
		return 1000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("CTNET_SOAK_CYCLES=%q: want a positive number", v)
	}
	return n
}

// resources are what a long run must not accumulate.
type resources map[string]int

func (e *env) kernelCounts() resources {
	e.t.Helper()
	r := resources{}
	r["links"] = len(e.linksIn(nil))
	addrs := 0
	for _, l := range e.linksIn(nil) {
		addrs += len(l.Addrs)
	}
	r["addresses"] = addrs
	r["routes"] = len(lines(e.output("ip", "-4", "route", "show", "table", "all")))
	_, elements := e.nftElements()
	r["nft elements"] = len(elements)
	files, mounts := e.namespacesUnderRoot()
	r["namespaces under the root"], r["mounts under the root"] = len(files), len(mounts)
	entries, _ := os.ReadDir(filepath.Join(e.root, "containers"))
	r["runtime directories"] = len(entries)
	r["ctnet processes"] = len(processesOfRoot(lab.Binary(e.t), e.root))
	return r
}

// processResources are a process's open descriptors and resident memory (KiB).
func processResources(t *testing.T, pid int) (fds, rssKiB int) {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.Fields(rest)[0])
		}
	}
	return len(entries), rssKiB
}

// 1,000 run -d / rm -f cycles through the CLI, four at a time, beside a resident
// container whose supervisor lives through them all: every command succeeds, every
// container's interface name is unique among those that exist with it (checked by a
// watcher that must have checked, and whose every look must have worked), and at the
// end the resident supervisor's descriptors and memory and the sandbox's links,
// addresses, routes, firewall elements, namespaces and processes are as at the start.
func TestSoakCLI(t *testing.T) {
	soakCycles := soakCycles(t)
	e := newEnv(t)
	e.must("network", "create", "soak", "--subnet", "10.76.0.0/22")
	e.runDetached(append([]string{"--name", "resident", "--network", "soak", "-p", "8080:80", "--"}, peerServer(80)...)...)
	resident := e.inspect("resident")
	cycle := func(worker, i int) error {
		name := fmt.Sprintf("s%d-%d", worker, i)
		r := e.ctnet("run", "-d", "--name", name, "--network", "soak", "-p", fmt.Sprintf("%d:80", 9000+worker), "--", "sleep", "600")
		if r.Code != 0 {
			return fmt.Errorf("run %s: %s", name, r)
		}
		if r := e.ctnet("rm", "-f", name); r.Code != 0 {
			return fmt.Errorf("rm %s: %s", name, r)
		}
		return nil
	}
	for i := range 20 { // warm up: the database grows to its working size
		if err := cycle(0, i); err != nil {
			t.Fatal(err)
		}
	}
	startCounts := e.kernelCounts()
	startFDs, startRSS := processResources(t, resident.Supervisor.PID)
	dbInfo, _ := os.Stat(filepath.Join(e.root, "state.db"))
	startDB := dbInfo.Size()
	start := time.Now()

	const workers = 4
	// A watcher checks, while the cycles run, that no two containers ever share an
	// interface name or an address.
	stop, watched := make(chan struct{}), make(chan error, 1)
	checks := 0
	go func() {
		for {
			select {
			case <-stop:
				watched <- nil
				return
			case <-time.After(200 * time.Millisecond):
			}
			r := e.ctnet("ps", "--format", "json")
			var cs []storeContainer
			if r.Code != 0 {
				watched <- fmt.Errorf("the watcher's ps failed: %s", r)
				return
			}
			if err := json.Unmarshal([]byte(r.Stdout), &cs); err != nil {
				watched <- fmt.Errorf("the watcher's ps printed what is not JSON: %v: %s", err, r.Stdout)
				return
			}
			names, ips := map[string]bool{}, map[string]bool{}
			for _, c := range cs {
				for _, a := range c.Networks {
					if names[a.HostVeth] || ips[a.IP] {
						watched <- fmt.Errorf("two containers share %s or %s: %s", a.HostVeth, a.IP, r.Stdout)
						return
					}
					names[a.HostVeth], ips[a.IP] = true, true
				}
			}
			checks++
		}
	}()
	var wg sync.WaitGroup
	failures := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < soakCycles; i += workers {
				if err := cycle(w+1, i); err != nil {
					failures <- err
					return
				}
				if i%100 == 0 {
					t.Logf("cycle %d after %v", i, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	close(stop)
	if err := <-watched; err != nil {
		t.Error(err)
	}
	t.Logf("%d cycles in %v; %d uniqueness checks while they ran", soakCycles, time.Since(start).Round(time.Second), checks)
	if checks == 0 {
		t.Errorf("the watcher made no uniqueness check while %d cycles ran", soakCycles)
	}

	deadline := time.Now().Add(10 * time.Second)
	var endCounts resources
	for {
		endCounts = e.kernelCounts()
		if fmt.Sprint(endCounts) == fmt.Sprint(startCounts) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // supervisors of removed containers exit
	}
	endFDs, endRSS := processResources(t, resident.Supervisor.PID)
	dbInfo, _ = os.Stat(filepath.Join(e.root, "state.db"))
	t.Logf("resident supervisor: %d descriptors and %d KiB resident before, %d and %d KiB after", startFDs, startRSS, endFDs, endRSS)
	t.Logf("kernel and processes before: %v", startCounts)
	t.Logf("kernel and processes after:  %v", endCounts)
	t.Logf("state.db: %d bytes before, %d after", startDB, dbInfo.Size())
	if fmt.Sprint(endCounts) != fmt.Sprint(startCounts) {
		t.Errorf("after %d cycles the sandbox holds %v, at the start %v", soakCycles, endCounts, startCounts)
	}
	if endFDs != startFDs {
		t.Errorf("the resident supervisor has %d descriptors open after the soak, %d before", endFDs, startFDs)
	}
	if endRSS > startRSS+1024 {
		t.Errorf("the resident supervisor grew from %d KiB to %d KiB", startRSS, endRSS)
	}
	if dbInfo.Size() > 2*startDB {
		t.Errorf("state.db grew from %d to %d bytes over the soak", startDB, dbInfo.Size())
	}
	if got := askPeer(e.wanRun, lab.HostUplinkIP, 8080); got != lab.WANIP {
		t.Errorf("the resident container's published port answers %q after the soak, want the wan's address", got)
	}
	e.checkConsistent(t)
	if report := e.gc(); len(report) > 0 {
		t.Errorf("gc after the soak found work:\n%s", strings.Join(report, "\n"))
	}
	e.must("rm", "-f", "resident")
	e.must("network", "rm", "soak")
}

// 1,000 run/exit/remove cycles through the Go API in this process, as a runtime
// embedding ctnet would make them: the process's descriptors, goroutines and heap,
// and the sandbox's links, addresses, routes, firewall elements and namespaces, are
// as at the start.
func TestSoakLibrary(t *testing.T) {
	soakCycles := soakCycles(t)
	e := newEnv(t)
	m, err := network.New(network.Options{Root: e.root, HostNetNS: e.host.Path})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.CreateNetwork(t.Context(), network.NetworkSpec{Name: "soak", Subnet: "10.77.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	port, err := network.ParsePort("9000:80")
	if err != nil {
		t.Fatal(err)
	}
	cycle := func(i int) error {
		p, err := m.Run(t.Context(), network.ContainerSpec{Name: fmt.Sprintf("lib%d", i), Network: network.OnNetwork("soak"),
			Ports: []network.PortSpec{port}, Command: []string{"true"}}, network.RunOptions{})
		if err != nil {
			return err
		}
		if code, err := p.Wait(); code != 0 || err != nil {
			return fmt.Errorf("true exited %d: %v", code, err)
		}
		return m.Remove(t.Context(), p.Container.ID, false)
	}
	for i := range 20 {
		if err := cycle(i); err != nil {
			t.Fatal(err)
		}
	}
	startCounts := e.kernelCounts()
	baseline := lab.TakeBaseline()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	startHeap := heap()
	start := time.Now()
	for i := range soakCycles {
		if err := cycle(i); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	t.Logf("%d cycles in %v", soakCycles, time.Since(start).Round(time.Second))
	if err := baseline.CheckLeaks(5 * time.Second); err != nil {
		t.Error(err)
	}
	endHeap := heap()
	endCounts := e.kernelCounts()
	t.Logf("heap in use: %d KiB before, %d KiB after", startHeap/1024, endHeap/1024)
	t.Logf("kernel before: %v", startCounts)
	t.Logf("kernel after:  %v", endCounts)
	if endHeap > startHeap+1<<20 {
		t.Errorf("the heap grew from %d KiB to %d KiB over %d cycles", startHeap/1024, endHeap/1024, soakCycles)
	}
	if fmt.Sprint(endCounts) != fmt.Sprint(startCounts) {
		t.Errorf("after %d cycles the sandbox holds %v, at the start %v", soakCycles, endCounts, startCounts)
	}
	e.checkConsistent(t)
	if err := m.RemoveNetwork(t.Context(), "soak", false); err != nil {
		t.Fatal(err)
	}
}
