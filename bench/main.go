// Command bench measures ctnet side by side with its peers in one run, inside
// sandbox network namespaces it makes and removes: setup and teardown latency per
// container (sequential and with parallel clients), the supervisors' memory, the
// data path, rule scaling with many published ports, the rootless data path, and
// ctnet over IPv6 next to IPv4 (setup on a dual-stack network, NAT66 against NAT44).
// It prints tables, and writes results.json and PNG charts to -out.
//
// It is a module of its own, so that its plotting library stays out of the
// library's go.mod; it builds against the repository it sits in (a replace
// directive). Run it as root from this directory:
//
//	cd bench && go run . -quick  # smoke test, about a minute
//	cd bench && go run .         # full run, about 25 minutes on 2 quiet CPUs
//
// It never configures the machine's own network namespace and sends traffic only
// to namespaces it made. Benchmarks report; they never assert.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ctnet/ctnet/internal/undo"
)

// benchEnv is what every section shares.
type benchEnv struct {
	clean    *undo.Stack
	tmp      string // world-searchable scratch directory
	ctnet    string // ctnet binary built from this repository
	ctnetCNI string // its CNI plugin, built likewise
	self     string // a copy of this binary the unprivileged user can run
	cfg      config
}

// config sizes a run.
type config struct {
	Mode string `json:"mode"`
	Ns   []int  `json:"n"`
	// Cycles is how often N=1 is repeated.
	Cycles int `json:"cycles_at_n1"`
	// PeerMaxN caps the N of the slow peers (see BENCHMARKS.md).
	PeerMaxN     map[string]int `json:"peer_max_n"`
	ConcurrentN  int            `json:"concurrent_n"`
	Clients      []int          `json:"clients"`
	IperfSeconds int            `json:"iperf_seconds"`
	Repetitions  int            `json:"datapath_repetitions"`
	Rounds       int            `json:"pingpong_rounds"`
	Ports        int            `json:"published_ports"`
	PortStep     int            `json:"port_step"`
	// Tools, when set, keeps only the setup tools whose name contains one of them.
	Tools []string `json:"tools,omitempty"`
}

func quickConfig() config {
	return config{Mode: "quick", Ns: []int{1, 10}, Cycles: 5, PeerMaxN: map[string]int{}, ConcurrentN: 16,
		Clients: []int{8}, IperfSeconds: 1, Repetitions: 1, Rounds: 2000, Ports: 1000, PortStep: 250}
}

func fullConfig() config {
	return config{Mode: "full", Ns: []int{1, 100, 1000}, Cycles: 20,
		// CNI's portmap re-reads ever longer iptables chains: at N=1000 the CNI run
		// alone takes over 15 minutes on 2 CPUs.
		// netavark at N=1000 takes about 8 minutes on its own.
		PeerMaxN:    map[string]int{"CNI plugins": 200, "netavark": 500},
		ConcurrentN: 100, Clients: []int{8, 32}, IperfSeconds: 3, Repetitions: 3, Rounds: 20000,
		Ports: 10000, PortStep: 1000}
}

var sections = []string{"start", "setup", "concurrency", "datapath", "rules", "rootless", "ipv6"}

// requiredPackages are the Debian packages the run uses, with one program each
// that shows it is installed.
var requiredPackages = [][2]string{
	{"iproute2", "ip"}, {"nftables", "nft"}, {"iptables", "iptables"}, {"iperf3", "iperf3"},
	{"socat", "socat"}, {"containernetworking-plugins", "/usr/lib/cni/portmap"},
	{"netavark", netavarkPath}, {"slirp4netns", "slirp4netns"}, {"passt", "pasta"},
	{"uidmap", "newuidmap"}, {"util-linux", "setpriv"},
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case pingPongClientArg:
			os.Exit(pingPongClientMain())
		case pingPongServerArg:
			os.Exit(pingPongServerMain())
		}
	}
	quick := flag.Bool("quick", false, "small N and short durations, for a smoke test")
	out := flag.String("out", "results", "directory for results.json and the PNG charts")
	only := flag.String("only", strings.Join(sections, ","), "comma-separated sections to run: "+strings.Join(sections, ", "))
	ns := flag.String("n", "", "comma-separated N for the setup and ipv6 sections (default: 1,100,1000; quick: 1,10)")
	tools := flag.String("tools", "", "comma-separated words: run only the setup tools whose name contains one (e.g. ctnet,netavark)")
	clients := flag.String("clients", "", "comma-separated numbers of parallel clients for the concurrency section (default: 8,32; quick: 8)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, *quick, *out, strings.Split(*only, ","), *ns, *tools, *clients)
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted; everything it made is removed")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, quick bool, outDir string, only []string, ns, tools, clients string) (err error) {
	for _, s := range only {
		if !slices.Contains(sections, s) {
			return fmt.Errorf("unknown section %q: choose from %s", s, strings.Join(sections, ", "))
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark makes network namespaces")
	}
	if missing := missingPackages(); len(missing) > 0 {
		return fmt.Errorf("missing Debian packages: apt-get install %s", strings.Join(missing, " "))
	}
	env := &benchEnv{clean: &undo.Stack{}, cfg: fullConfig()}
	if quick {
		env.cfg = quickConfig()
	}
	if ns != "" {
		if env.cfg.Ns, err = counts(ns); err != nil {
			return fmt.Errorf("bad -n %q: give numbers of containers, e.g. 1,100", ns)
		}
	}
	if clients != "" {
		if env.cfg.Clients, err = counts(clients); err != nil {
			return fmt.Errorf("bad -clients %q: give numbers of clients, e.g. 8", clients)
		}
	}
	if tools != "" {
		env.cfg.Tools = strings.Split(tools, ",")
	}
	defer func() {
		if cerr := env.clean.UnwindTo(0); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if env.tmp, err = os.MkdirTemp("", "ctnet-bench-"); err != nil {
		return err
	}
	env.clean.Push("scratch directory", func() error { return os.RemoveAll(env.tmp) })
	if err := os.Chmod(env.tmp, 0o755); err != nil {
		return err
	}
	if env.ctnet, err = buildCommand(ctx, env.tmp, "ctnet"); err != nil {
		return err
	}
	if env.ctnetCNI, err = buildCommand(ctx, env.tmp, "ctnet-cni"); err != nil {
		return err
	}
	// Rootless containers' user-mode network, which ctnet finds beside itself.
	userNet, err := buildCommand(ctx, env.tmp, "ctnet-usernet")
	if err != nil {
		return err
	}
	// Supervisors outlive the CLI by design; whatever a failed or interrupted run
	// leaves is killed by PID: only processes of this run's own ctnet binaries. A
	// user-mode network ends with its supervisor, so it is waited for after them.
	env.clean.Push("ctnet user-mode networks", func() error { return awaitSupervisors(userNet, 5*time.Second) })
	env.clean.Push("ctnet supervisors", func() error { return awaitSupervisors(env.ctnet, 5*time.Second) })
	if env.self, err = copySelf(env.tmp); err != nil {
		return err
	}
	res := &results{
		Command: "go run ." + map[bool]string{true: " -quick", false: ""}[quick],
		Config:  env.cfg, Started: time.Now().UTC(), Machine: describeMachine(), LoadBefore: loadAverage(),
	}
	steps := map[string]func(context.Context, *benchEnv, *results) error{
		"start": runStartSection, "setup": runSetupSection, "concurrency": runConcurrencySection, "datapath": runDataPathSection,
		"rules": runRulesSection, "rootless": runRootlessSection, "ipv6": runIPv6Section,
	}
	for _, s := range sections {
		if !slices.Contains(only, s) {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s\n", s)
		t0 := time.Now()
		if err := steps[s](ctx, env, res); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res.Errors = append(res.Errors, s+": "+err.Error())
			fmt.Fprintf(os.Stderr, "   %s failed: %v\n", s, err)
		}
		fmt.Fprintf(os.Stderr, "   %s took %s\n", s, time.Since(t0).Round(time.Second))
	}
	res.Seconds, res.LoadAfter = time.Since(res.Started).Seconds(), loadAverage()
	printTables(os.Stdout, res)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(outDir, "results.json"), res); err != nil {
		return err
	}
	if err := writeMarkdown(filepath.Join(outDir, "results.md"), res); err != nil {
		return err
	}
	if err := writeCharts(outDir, res); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "results and charts in %s\n", outDir)
	return nil
}

func missingPackages() []string {
	var missing []string
	for _, p := range requiredPackages {
		if _, err := exec.LookPath(p[1]); err != nil {
			missing = append(missing, p[0])
		}
	}
	return missing
}

// buildCommand builds cmd/NAME from the ctnet module this command is built against
// (the repository it sits in).
func buildCommand(ctx context.Context, dir, name string) (string, error) {
	root, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/ctnet/ctnet").Output()
	if err != nil {
		return "", fmt.Errorf("find the ctnet module: %w (run from the bench directory)", err)
	}
	path := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./cmd/"+name)
	cmd.Dir = strings.TrimSpace(string(root))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as the README builds it
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %v: %s", name, err, out)
	}
	return path, nil
}

// copySelf copies this binary where the unprivileged user can run it (go run keeps
// it in a private build directory).
func copySelf(dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	src, err := os.Open(self)
	if err != nil {
		return "", err
	}
	defer src.Close()
	path := filepath.Join(dir, "ctnet-bench")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return "", err
	}
	return path, dst.Close()
}

// counts parses a comma-separated list of positive numbers.
func counts(list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", s)
		}
		out = append(out, n)
	}
	return out, nil
}
