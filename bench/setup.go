package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// setupResult is one tool at one N with one number of parallel clients. Times are
// per container, in milliseconds.
type setupResult struct {
	Tool    string `json:"tool"`
	N       int    `json:"n"`
	Clients int    `json:"clients"`
	// Cycles, for N=1, is how many times one container was added and removed.
	Cycles   int     `json:"cycles,omitempty"`
	Setup    summary `json:"setup"`
	Teardown summary `json:"teardown"`
	Total    summary `json:"setup_plus_teardown"`
	// SetupGrowth is the last containers' setup time over the first ones';
	// TeardownGrowth the first removed (N present) over the last removed (one left).
	SetupGrowth       value         `json:"setup_nth_over_first"`
	TeardownGrowth    value         `json:"teardown_full_over_empty"`
	SetupPerSecond    value         `json:"setup_per_s"`
	TeardownPerSecond value         `json:"teardown_per_s"`
	Failures          int           `json:"failures"`
	Error             string        `json:"error,omitempty"`
	Check             string        `json:"check"`
	Memory            *memoryResult `json:"memory,omitempty"`
	// SetupSamples and TeardownSamples are every container's times in index order.
	SetupSamples    []float64 `json:"setup_samples_ms"`
	TeardownSamples []float64 `json:"teardown_samples_ms"`
}

// timedBatch runs fn for every index with clients workers, each on its own thread
// in the lab's host namespace, and returns each index's duration (ms, NaN when it
// failed) and the wall-clock time of the whole batch.
func timedBatch(ctx context.Context, l *lab, clients int, indices []int, fn func(w *nsThread, i int) error) (map[int]float64, time.Duration, []error, error) {
	workers := []*nsThread{l.host}
	if clients > 1 {
		workers = nil
		for range clients {
			w, err := newNSThread(l.hostPath)
			if err != nil {
				return nil, 0, nil, err
			}
			defer w.close()
			workers = append(workers, w)
		}
	}
	var (
		next int64 = -1
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	times := make(map[int]float64, len(indices))
	start := time.Now()
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(atomic.AddInt64(&next, 1))
				if k >= len(indices) || ctx.Err() != nil {
					return
				}
				i := indices[k]
				t0 := time.Now()
				err := fn(w, i)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					times[i] = math.NaN()
					errs = append(errs, fmt.Errorf("container %d: %w", i, err))
				} else {
					times[i] = ms(d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return times, time.Since(start), errs, ctx.Err()
}

// ordered returns the successful durations in index order.
func ordered(times map[int]float64, indices []int) []float64 {
	var out []float64
	for _, i := range indices {
		if v, ok := times[i]; ok && !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

// runSetup measures one tool at one N in a fresh lab. With cycles > 0 (N=1) the one
// container is added and removed that many times.
func runSetup(ctx context.Context, env *benchEnv, tool setupTool, n, clients, cycles int) (res setupResult, err error) {
	res = setupResult{Tool: tool.name(), N: n, Clients: clients, Cycles: cycles, Check: "skipped"}
	if _, ok := tool.(unchecked); ok {
		res.Check = "n/a"
	}
	mark := env.clean.Mark()
	defer func() {
		if cerr := env.clean.UnwindTo(mark); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	l, err := newLab(ctx, env.clean)
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp(env.tmp, "run-")
	if err != nil {
		return res, err
	}
	env.clean.Push("run directory", func() error { return os.RemoveAll(dir) })
	r := &setupRun{lab: l, dir: dir, n: n, ctnet: env.ctnet, ctnetCNI: env.ctnetCNI}
	if _, own := tool.(makesOwnNamespace); !own {
		if err := l.addContainerNamespaces(ctx, n); err != nil {
			return res, err
		}
	}
	if err := tool.prepare(ctx, r); err != nil {
		return res, fmt.Errorf("prepare %s: %w", tool.name(), err)
	}
	add := func(w *nsThread, i int) error { return tool.add(ctx, w, r, i) }
	del := func(w *nsThread, i int) error { return tool.del(ctx, w, r, i) }
	var setupErrs, teardownErrs []error
	var setups, teardowns []float64
	var setupWall, teardownWall time.Duration
	if cycles > 0 {
		for c := range cycles {
			times, wall, errs, err := timedBatch(ctx, l, 1, []int{1}, add)
			if err != nil {
				return res, err
			}
			setupErrs, setupWall = append(setupErrs, errs...), setupWall+wall
			setups = append(setups, ordered(times, []int{1})...)
			if c == 0 && len(errs) == 0 {
				if err := afterSetup(ctx, env, r, tool, &res); err != nil {
					return res, err
				}
			}
			if len(errs) > 0 {
				continue
			}
			times, wall, errs, err = timedBatch(ctx, l, 1, []int{1}, del)
			if err != nil {
				return res, err
			}
			teardownErrs, teardownWall = append(teardownErrs, errs...), teardownWall+wall
			teardowns = append(teardowns, ordered(times, []int{1})...)
		}
	} else {
		indices := make([]int, n)
		for k := range indices {
			indices[k] = k + 1
		}
		addTimes, wall, errs, err := timedBatch(ctx, l, clients, indices, add)
		if err != nil {
			return res, err
		}
		setupErrs, setupWall, setups = errs, wall, ordered(addTimes, indices)
		if len(errs) == 0 {
			if err := afterSetup(ctx, env, r, tool, &res); err != nil {
				return res, err
			}
		}
		var added []int
		for _, i := range indices {
			if !math.IsNaN(addTimes[i]) {
				added = append(added, i)
			}
		}
		delTimes, wall, errs, err := timedBatch(ctx, l, clients, added, del)
		if err != nil {
			return res, err
		}
		teardownErrs, teardownWall, teardowns = errs, wall, ordered(delTimes, added)
	}
	res.Setup, res.Teardown = summarize(setups), summarize(teardowns)
	res.SetupSamples, res.TeardownSamples = setups, teardowns
	if len(setups) == len(teardowns) {
		totals := make([]float64, len(setups))
		for k := range setups {
			totals[k] = setups[k] + teardowns[k]
		}
		res.Total = summarize(totals)
	} else {
		res.Total = summarize(nil)
	}
	res.SetupGrowth = res.Setup.LastMedian / res.Setup.FirstMedian
	res.TeardownGrowth = res.Teardown.FirstMedian / res.Teardown.LastMedian
	res.SetupPerSecond = value(float64(len(setups)) / setupWall.Seconds())
	res.TeardownPerSecond = value(float64(len(teardowns)) / teardownWall.Seconds())
	if len(setupErrs) > 0 {
		// The check runs only once every container is up: failed setups fail it, and
		// a check of the containers that did come up would hide that.
		res.Check = checkResult(fmt.Errorf("%d of %d setups failed: %w", len(setupErrs), len(setups)+len(setupErrs), setupErrs[0]))
	}
	allErrs := append(setupErrs, teardownErrs...)
	res.Failures = len(allErrs)
	if len(allErrs) > 0 {
		res.Error = allErrs[0].Error()
	}
	return res, nil
}

// afterSetup runs, untimed, while all containers are up: the functional check of
// the first and the last, and for `ctnet run -d` one after another, the memory of
// its supervisors.
func afterSetup(ctx context.Context, env *benchEnv, r *setupRun, tool setupTool, res *setupResult) error {
	if _, ok := tool.(unchecked); !ok {
		var checks []error
		for _, i := range []int{1, r.n} {
			checks = append(checks, checkContainer(ctx, r, tool, i))
			if r.n == 1 {
				break
			}
		}
		res.Check = checkResult(errors.Join(checks...))
	}
	if _, ok := tool.(ctnetRunTool); ok && res.Clients == 1 {
		mem, err := measureSupervisors(env.ctnet)
		if err != nil {
			return err
		}
		res.Memory = &mem
	}
	return nil
}

func checkResult(err error) string {
	if err != nil {
		return "fail: " + strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return "ok"
}

// checkContainer proves that container i got what was timed: its published port
// answers from the wan and from the host itself, and its traffic to the wan leaves
// masqueraded behind the host's address; on a dual-stack network over both families.
func checkContainer(ctx context.Context, r *setupRun, tool setupTool, i int) error {
	path, err := tool.netns(r, i)
	if err != nil {
		return err
	}
	ct, err := newNSThread(path)
	if err != nil {
		return err
	}
	defer ct.close()
	greeting := "hello-" + strconv.Itoa(i)
	ctAddr, wanAddr := ":"+strconv.Itoa(containerPort), wanIP+":9999"
	if r.ipv6 {
		ctAddr, wanAddr = "[::]:"+strconv.Itoa(containerPort), "[::]:9999" // both families
	}
	ln, err := ct.listen(ctAddr)
	if err != nil {
		return err
	}
	defer ln.Close()
	go serveLine(ln, func(net.Conn) string { return greeting })
	wanLn, err := r.lab.wan.listen(wanAddr)
	if err != nil {
		return err
	}
	defer wanLn.Close()
	go serveLine(wanLn, func(c net.Conn) string { return c.RemoteAddr().(*net.TCPAddr).IP.String() })

	type probe struct {
		what string
		from *nsThread
		addr string
		want string
	}
	port := strconv.Itoa(portBase + i)
	published := net.JoinHostPort(hostUplinkIP, port)
	probes := []probe{
		{"wan to published port", r.lab.wan, published, greeting},
		{"host to published port", r.lab.host, published, greeting},
		{"container to wan (masquerade)", ct, wanIP + ":9999", hostUplinkIP},
	}
	if r.ipv6 {
		published6 := net.JoinHostPort(hostUplinkIP6, port)
		probes = append(probes,
			probe{"wan to published port over IPv6", r.lab.wan, published6, greeting},
			probe{"host to published port over IPv6", r.lab.host, published6, greeting},
			probe{"container to wan (NAT66)", ct, net.JoinHostPort(wanIP6, "9999"), hostUplinkIP6})
	}
	var errs []error
	for _, probe := range probes {
		got, err := readLine(probe.from, probe.addr)
		if err == nil && got != probe.want {
			err = fmt.Errorf("got %q, want %q", got, probe.want)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("container %d: %s: %w", i, probe.what, err))
		}
	}
	return errors.Join(errs...)
}

func serveLine(ln net.Listener, line func(net.Conn) string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(c, line(c))
		c.Close()
	}
}

func readLine(from *nsThread, addr string) (string, error) {
	c, err := from.dial(addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// setupTools returns fresh instances of the tools the configuration selects, the
// floor and the peers first.
func setupTools(cfg config) []setupTool {
	return selectTools(cfg, []setupTool{&netlinkFloorTool{}, manualTool{}, &cniTool{}, netavarkTool{}, ctnetAttachTool{}, ctnetCNITool{}, &ctnetAPITool{}, ctnetRunTool{}})
}

// selectTools keeps the tools whose name contains one of the configuration's words.
func selectTools(cfg config, all []setupTool) []setupTool {
	if len(cfg.Tools) == 0 {
		return all
	}
	var out []setupTool
	for _, t := range all {
		if slices.ContainsFunc(cfg.Tools, func(word string) bool { return strings.Contains(t.name(), word) }) {
			out = append(out, t)
		}
	}
	return out
}

// runSetupSection measures every tool at every N, one container after another.
func runSetupSection(ctx context.Context, env *benchEnv, res *results) error {
	return measureSetups(ctx, env, res, setupTools, &res.Setup)
}

// measureSetups measures the tools (fresh ones at every N) at every N, one container
// after another, into rows; the tool loop is inside the N loop so that machine noise
// hits all tools alike.
func measureSetups(ctx context.Context, env *benchEnv, res *results, tools func(config) []setupTool, rows *[]setupResult) error {
	for _, want := range env.cfg.Ns {
		for _, tool := range tools(env.cfg) {
			n := want
			if limit, ok := env.cfg.PeerMaxN[tool.name()]; ok && n > limit {
				if slices.Contains(env.cfg.Ns, limit) {
					continue
				}
				n = limit
				res.Notes = append(res.Notes, fmt.Sprintf("%s is measured at N=%d instead of N=%d (see BENCHMARKS.md)", tool.name(), n, want))
			}
			cycles := 0
			if n == 1 {
				cycles = env.cfg.Cycles
			}
			r, err := runSetup(ctx, env, tool, n, 1, cycles)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// One tool failing leaves the others' comparison standing.
				recordError(res, fmt.Errorf("setup: %s at N=%d: %w", tool.name(), n, err))
				continue
			}
			logSetup(r)
			*rows = append(*rows, r)
			settle(ctx, n)
		}
	}
	return nil
}

// runConcurrencySection measures every tool with several clients at once.
func runConcurrencySection(ctx context.Context, env *benchEnv, res *results) error {
	for _, clients := range env.cfg.Clients {
		for _, tool := range setupTools(env.cfg) {
			r, err := runSetup(ctx, env, tool, env.cfg.ConcurrentN, clients, 0)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				recordError(res, fmt.Errorf("concurrency: %s with %d clients: %w", tool.name(), clients, err))
				continue
			}
			logSetup(r)
			res.Concurrency = append(res.Concurrency, r)
			settle(ctx, env.cfg.ConcurrentN)
		}
	}
	return nil
}

func recordError(res *results, err error) {
	res.Errors = append(res.Errors, err.Error())
	fmt.Fprintf(os.Stderr, "   %v\n", err)
}

// settle gives the kernel time to finish destroying the last run's namespaces,
// which it does in the background under locks the next run needs.
func settle(ctx context.Context, n int) {
	select {
	case <-ctx.Done():
	case <-time.After(500*time.Millisecond + time.Duration(n)*3*time.Millisecond):
	}
}

func logSetup(r setupResult) {
	fmt.Fprintf(os.Stderr, "   %-30s N=%-5d clients=%-2d setup p50 %7.2f ms  teardown p50 %7.2f ms  %6.1f/s  failures %d  check %s\n",
		r.Tool, r.N, r.Clients, r.Setup.P50, r.Teardown.P50, r.SetupPerSecond, r.Failures, r.Check)
	if r.Error != "" {
		fmt.Fprintf(os.Stderr, "      first error: %s\n", r.Error)
	}
}
