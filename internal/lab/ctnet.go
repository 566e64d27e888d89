package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/fault"
	"github.com/ctnet/ctnet/internal/linkreaper"
	"github.com/ctnet/ctnet/internal/usernetproc"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
)

// The "wan" side of a sandbox: a second namespace behind a veth, standing in for the
// rest of the world (TEST-NET-3, and for IPv6 a documentation prefix).
const (
	HostUplinkIP = "203.0.113.1"
	WANIP        = "203.0.113.2"
	uplinkPrefix = "/24"

	HostUplinkIP6 = "2001:db8:ff::1"
	WANIP6        = "2001:db8:ff::2"
	uplinkPrefix6 = "/64"
)

// Main runs the tests and removes the ctnet binary built for them; call it from
// TestMain. Under the race detector it fails the run if a ctnet process it started
// reported a race: a detached supervisor's report reaches no test otherwise.
func Main(m interface{ Run() int }) int {
	var raceLogs string
	if raceEnabled {
		dir, err := os.MkdirTemp("", "ctnet-race-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		raceLogs = filepath.Join(dir, "race")
		// Every ctnet process started from here on inherits it.
		os.Setenv("GORACE", "log_path="+raceLogs+" "+raceExitNow)
	}
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	if raceLogs != "" {
		logs, _ := filepath.Glob(raceLogs + ".*")
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			fmt.Fprintf(os.Stderr, "a ctnet process reported a data race (%s):\n%s\n", l, b)
			code = 1
		}
	}
	return code
}

var build struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*builtBinary // by command name
}

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// Binary builds cmd/ctnet once per test process and returns its path (world
// readable and executable, so the unprivileged test user can run it too). Tests
// built with -race get a ctnet built with -race (which needs cgo); otherwise it is
// static, as released. It is built with the crash points (fault.BuildTag), for every
// test: the crash tests need them in the commands they kill and in the supervisors
// those commands start, which the other tests' leak checks find by this path;
// unarmed, the hook does nothing. The user-mode network's helper is built beside it,
// where ctnet looks for it (UserNetHelper).
func Binary(t testing.TB) string {
	t.Helper()
	UserNetHelper(t)
	return buildCommand(t, "ctnet")
}

// UserNetHelper builds cmd/ctnet-usernet beside Binary's ctnet once per test process
// and returns its path.
func UserNetHelper(t testing.TB) string {
	t.Helper()
	return buildCommand(t, usernetproc.HelperName)
}

// CNIPlugin builds cmd/ctnet-cni once per test process and returns its path.
func CNIPlugin(t testing.TB) string {
	t.Helper()
	return buildCommand(t, "ctnet-cni")
}

func buildCommand(t testing.TB, name string) string {
	t.Helper()
	build.mu.Lock()
	if build.bins == nil {
		build.bins = map[string]*builtBinary{}
	}
	b := build.bins[name]
	if b == nil {
		b = &builtBinary{}
		build.bins[name] = b
	}
	build.mu.Unlock()
	b.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			b.err = err
			return
		}
		build.mu.Lock()
		if build.dir == "" {
			build.dir, err = os.MkdirTemp("", "ctnet-bin-")
			if err == nil {
				os.Chmod(build.dir, 0o755)
			}
		}
		dir := build.dir
		build.mu.Unlock()
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-tags", fault.BuildTag, "-ldflags", versionFlag(root), "-o", b.path, "./cmd/"+name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if raceEnabled {
			cmd = exec.Command("go", "build", "-race", "-tags", fault.BuildTag, "-ldflags", versionFlag(root), "-o", b.path, "./cmd/"+name)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		}
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/%s: %v: %s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// versionFlag stamps the checkout's version into the binary, as the README's build
// command does: the linker flag, or none outside a git checkout.
func versionFlag(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return "-X main.buildVersion=" + strings.TrimSpace(string(out))
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// WAN is the namespace on the far side of the sandbox's uplink.
type WAN struct {
	Sandbox
}

// AddWAN connects the sandbox to a new "wan" namespace: the sandbox's uplink
// (HostUplinkIP and HostUplinkIP6, interface "uplink0") and the wan's end (WANIP,
// WANIP6), with the sandbox's default routes pointing at the wan, as a host's would
// at its router. The IPv6 addresses skip duplicate address detection, so they are
// usable at once.
func (s *Sandbox) AddWAN(t testing.TB) *WAN {
	t.Helper()
	w := &WAN{Sandbox: *newSandbox(t, "ctw-")}
	mustRun(t, "ip", "link", "add", "uplink0", "netns", s.Name, "type", "veth", "peer", "name", "wan0", "netns", w.Name)
	s.MustRun(t, "ip", "addr", "add", HostUplinkIP+uplinkPrefix, "dev", "uplink0")
	s.MustRun(t, "ip", "link", "set", "uplink0", "up")
	w.MustRun(t, "ip", "addr", "add", WANIP+uplinkPrefix, "dev", "wan0")
	w.MustRun(t, "ip", "link", "set", "wan0", "up")
	s.MustRun(t, "ip", "route", "add", "default", "via", WANIP)
	s.MustRun(t, "ip", "addr", "add", HostUplinkIP6+uplinkPrefix6, "dev", "uplink0", "nodad")
	w.MustRun(t, "ip", "addr", "add", WANIP6+uplinkPrefix6, "dev", "wan0", "nodad")
	s.MustRun(t, "ip", "-6", "route", "add", "default", "via", WANIP6)
	// The carrier comes up a moment later; a snapshot taken before would differ from
	// every later one.
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := s.MustRun(t, "ip", "-o", "link", "show", "uplink0")
		if !strings.Contains(l, "NO-CARRIER") && strings.Contains(l, " state UP ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uplink0 in %s has no carrier: %s", s.Name, l)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w
}

func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Root makes a fresh ctnet root directory for the test. At cleanup it fails the
// test if anything is still mounted under it, then removes it.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctnet-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m := MountsUnder(dir); len(m) > 0 {
			t.Errorf("mounts left under the ctnet root: %v", m)
			for _, p := range m {
				exec.Command("umount", "-l", p).Run()
			}
		}
		os.RemoveAll(dir)
	})
	return dir
}

// MountsUnder lists the mount points at or below dir.
func MountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return mountsUnder(string(b), dir)
}

// MountsUnder lists the mount points at or below dir that the sandbox's commands
// see: those of its boot, if it has one.
func (s *Sandbox) MountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	return mountsUnder(s.stableOutput(t, "cat", "/proc/self/mountinfo"), dir)
}

func mountsUnder(mountinfo, dir string) []string {
	var out []string
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// Result is what a command printed and its exit status.
type Result struct {
	Stdout, Stderr string
	Code           int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
}

// Ctnet runs the ctnet binary inside the sandbox with the given root.
func (s *Sandbox) Ctnet(t testing.TB, root string, args ...string) Result {
	t.Helper()
	return s.CtnetEnv(t, root, nil, args...)
}

// CtnetEnv is Ctnet with extra environment variables.
func (s *Sandbox) CtnetEnv(t testing.TB, root string, env []string, args ...string) Result {
	t.Helper()
	const timeout = 2 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := s.Command(ctx, append([]string{Binary(t), "--root", root}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		// Killed for its time, which would otherwise pass for any other kill.
		t.Fatalf("ctnet %v did not finish in %v: stdout %q, stderr %q", args, timeout, r.Stdout, r.Stderr)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run ctnet %v: %v", args, err)
	}
	return r
}

// MustCtnet runs ctnet and fails the test unless it exits 0; it returns stdout.
func (s *Sandbox) MustCtnet(t testing.TB, root string, args ...string) string {
	t.Helper()
	r := s.Ctnet(t, root, args...)
	if r.Code != 0 {
		t.Fatalf("ctnet %s: %s", strings.Join(args, " "), r)
	}
	return r.Stdout
}

// Try runs a command in the sandbox and returns its combined output and error.
func (s *Sandbox) Try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := s.Command(ctx, args...).CombinedOutput()
	return string(out), err
}

// InNetNS returns the argument prefix that runs a command in a namespace file (a
// container's, as `ctnet inspect` reports it) without entering ctnet.
func InNetNS(path string) []string {
	return []string{"nsenter", "--net=" + path}
}

var (
	ifindexRE = regexp.MustCompile(`(?m)^\d+: `)
	timerRE   = regexp.MustCompile(`(\w+_timer)\s+[\d.]+`) // bridge timers tick between two reads
	// nft lists the elements of an interval set in the order of the set's internal
	// structure, which depends on the order they were added in.
	elementsRE = regexp.MustCompile(`elements = \{([^}]*)\}`)
)

// sortElements rewrites every "elements = { ... }" of nft's output with the elements
// sorted, one per line.
func sortElements(ruleset string) string {
	return elementsRE.ReplaceAllStringFunc(ruleset, func(block string) string {
		var els []string
		for _, e := range strings.Split(elementsRE.FindStringSubmatch(block)[1], ",") {
			els = append(els, strings.TrimSpace(e))
		}
		sort.Strings(els)
		return "elements = {\n\t" + strings.Join(els, ",\n\t") + " }"
	})
}

// Snapshot is the kernel state of the sandbox that ctnet may change, as independent
// tools print it.
type Snapshot map[string]string

// Snapshot records links, addresses, routes, the nft ruleset, and the namespace files
// and mounts under root.
func (s *Sandbox) Snapshot(t testing.TB, root string) Snapshot {
	t.Helper()
	s.AwaitDyingVeths(t)
	snap := Snapshot{}
	for name, args := range map[string][]string{
		"ip -d link": {"ip", "-d", "link"},
		// IPv6 link-local addresses appear late on new links (DAD): IPv6 is
		// recorded without them.
		"ip addr":         {"ip", "-4", "addr"},
		"ip route":        {"ip", "-4", "route", "show", "table", "all"},
		"ip -6 addr":      {"ip", "-6", "addr", "show", "scope", "global"},
		"ip -6 route":     {"sh", "-c", "ip -6 route show table main | grep -v '^fe80:' || true"},
		"IPv6 forwarding": {"cat", "/proc/sys/net/ipv6/conf/all/forwarding"},
		"nft":             {"nft", "list", "ruleset"},
	} {
		out := ifindexRE.ReplaceAllString(s.stableOutput(t, args...), "N: ")
		out = timerRE.ReplaceAllString(out, "$1")
		if name == "nft" {
			out = sortElements(out)
		}
		snap[name] = out
	}
	// ctnet's namespaces are files under the root, pinned by mounts there. The machine's
	// `ip netns` list is not recorded: tests running in parallel, and other programs,
	// add and remove their own named namespaces meanwhile.
	var files []string
	entries, _ := os.ReadDir(filepath.Join(root, "netns"))
	for _, e := range entries {
		files = append(files, e.Name())
	}
	snap["namespaces under root"] = strings.Join(files, "\n")
	snap["mounts under root"] = strings.Join(s.MountsUnder(t, root), "\n")
	return snap
}

// stableOutput runs a command in the sandbox and returns its standard output. ip
// names the namespace at the far end of a veth by looking through /run/netns, and
// complains on standard error ("Peer netns reference is invalid") when a namespace
// there is removed meanwhile, by another test or program: that read is repeated.
func (s *Sandbox) stableOutput(t testing.TB, args ...string) string {
	t.Helper()
	for try := 0; ; try++ {
		var stderr bytes.Buffer
		cmd := s.Command(context.Background(), args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil && stderr.Len() == 0 {
			return string(out)
		}
		if err != nil || try == 20 {
			t.Fatalf("in %s: %s: %v: %s%s", s.Name, strings.Join(args, " "), err, out, stderr.Bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Diff describes how two snapshots differ, or "" if they are the same.
func (a Snapshot) Diff(b Snapshot) string {
	var out []string
	for k, va := range a {
		if vb := b[k]; va != vb {
			out = append(out, fmt.Sprintf("%s differs:\n--- before\n%s\n--- after\n%s", k, va, vb))
		}
	}
	return strings.Join(out, "\n")
}

// deletingRetired reports whether a process that deletes retired links
// (internal/linkreaper) runs, for any root.
func deletingRetired() bool {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte("\x00"+linkreaper.Arg+"\x00")) {
			return true
		}
	}
	return false
}

// RandomName returns prefix followed by 8 random hex digits.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// AwaitDyingVeths waits until no ctnet veth in the sandbox is dying: one whose
// peer's namespace has lost its last reference, which the kernel removes with the
// namespace a few milliseconds later, or a link `rm` retired, which a process it
// started deletes. ctnet leaves the veths of containers that owned their namespace
// to that batched cleanup, and the deletion of others to that process, so a
// reading right after `rm` would otherwise catch them on their way out. Only the waiting asks the kernel through
// ctnet's link package; what tests then assert they read with iproute2.
func (s *Sandbox) AwaitDyingVeths(t testing.TB) {
	t.Helper()
	ns, err := netns.Open(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		links, err := link.List(ns)
		if err != nil {
			t.Fatalf("list links of %s: %v", s.Name, err)
		}
		var dying []string
		for _, l := range links {
			if l.Attrs().Group == link.RetiredGroup {
				// rm hands its deletion on; one killed before it did leaves it to gc.
				if deletingRetired() {
					dying = append(dying, l.Attrs().Name)
				}
				continue
			}
			if l.Type() != "veth" || !strings.HasPrefix(l.Attrs().Alias, "ctnet:") {
				continue
			}
			if gone, err := link.Dying(ns, l.Attrs().Name); err == nil && gone {
				dying = append(dying, l.Attrs().Name)
			}
		}
		if len(dying) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("veths %v in %s are still dying after 10s", dying, s.Name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
