// Package lab holds the fixtures of ctnet's tests: a
// throwaway "host" network namespace per test, in-process servers inside
// it, the unprivileged test user, /dev/net/tun access, and leak baselines.
//
// Everything runs in namespaces the test makes: the machine's own network
// namespace is never configured and receives no traffic.
package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/netns"
)

// TestUserName is the unprivileged user rootless tests run as.
const TestUserName = "ctnettest"

// EnvRequireAll, set to 1, turns a test's skip for a missing prerequisite into a
// failure: scripts/test.sh sets it, so that CI cannot pass by skipping.
const EnvRequireAll = "CTNET_REQUIRE_ALL"

// Missing skips t for a prerequisite the machine lacks, or fails it under
// CTNET_REQUIRE_ALL=1.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(EnvRequireAll) == "1" {
		t.Fatalf("missing prerequisite (%s=1 makes this a failure): %s", EnvRequireAll, fmt.Sprintf(format, args...))
	}
	t.Skipf(format, args...)
}

// RequireRoot skips t unless it runs as root with the tools it needs.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: makes network namespaces")
	}
	for _, tool := range []string{"ip", "nsenter", "setpriv", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			Missing(t, "needs %s: %v", tool, err)
		}
	}
}

// Sandbox is a network namespace standing in for the host of a test.
type Sandbox struct {
	Name string
	Path string
	// Boot, when set, is the boot the sandbox's commands run in (see NewBoot).
	Boot *Boot
	// tun is a device node that AsUser's commands see as /dev/net/tun, if set.
	tun string
}

// NewSandbox makes a namespace "ctl-<random>" with lo up, removed at cleanup.
func NewSandbox(t testing.TB) *Sandbox {
	t.Helper()
	return newSandbox(t, "ctl-")
}

func newSandbox(t testing.TB, prefix string) *Sandbox {
	t.Helper()
	RequireRoot(t)
	s := &Sandbox{Name: RandomName(prefix)}
	s.Path = "/run/netns/" + s.Name
	if out, err := exec.Command("ip", "netns", "add", s.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", s.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", s.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", s.Name, err, out)
		}
	})
	s.MustRun(t, "ip", "link", "set", "lo", "up")
	return s
}

// Command returns a command running in the sandbox namespace.
func (s *Sandbox) Command(ctx context.Context, args ...string) *exec.Cmd {
	enter := []string{"--net=" + s.Path}
	if s.Boot != nil {
		enter = append(enter, "--mount="+s.Boot.mountNS)
	}
	return exec.CommandContext(ctx, "nsenter", append(enter, args...)...)
}

// MustRun runs a command in the sandbox and returns its output.
func (s *Sandbox) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.Command(context.Background(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", s.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// AddLoopbackAddr adds an address (CIDR) to the sandbox's lo: a "remote"
// host that only exists inside the sandbox.
func (s *Sandbox) AddLoopbackAddr(t testing.TB, cidr string) {
	t.Helper()
	s.MustRun(t, "ip", "addr", "add", cidr, "dev", "lo")
}

// Sysctl sets a per-namespace sysctl inside the sandbox.
func (s *Sandbox) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	s.MustRun(t, "sysctl", "-q", "-w", key+"="+value)
}

// NS opens the sandbox's namespace for ctnet's packages, closed at cleanup.
func (s *Sandbox) NS(t testing.TB) *netns.NS {
	t.Helper()
	ns, err := netns.Open(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// inNamespace runs fn on a thread switched into the sandbox (netns.Do).
func (s *Sandbox) inNamespace(fn func() error) error {
	ns, err := netns.Open(s.Path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return ns.Do(fn)
}

// ListenTCP returns a listener bound inside the sandbox, closed at cleanup.
func (s *Sandbox) ListenTCP(t testing.TB, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := s.inNamespace(func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, s.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// ListenUDP returns a UDP socket bound inside the sandbox, closed at cleanup.
func (s *Sandbox) ListenUDP(t testing.TB, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	if err := s.inNamespace(func() (err error) {
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, s.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// TestUser returns the uid and gid of TestUserName, skipping t without it.
func TestUser(t testing.TB) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup(TestUserName)
	if err != nil {
		Missing(t, "needs user %s: %v", TestUserName, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// UserDir makes a directory owned by the test user (mode 0700) inside a
// world-searchable temporary directory, removed at cleanup.
func UserDir(t testing.TB, uid, gid int) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "ctnet-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "user")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ExecutableCopy copies the running test binary to dir (which the test
// user can read) so that it can be run as that user.
func ExecutableCopy(t testing.TB, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, filepath.Base(self))
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	return path
}

// AllowTUN lets the commands AsUser prefixes open /dev/net/tun as the test user:
// they see a node of the same device with mode 0666 (what Debian's udev gives it)
// over /dev/net/tun, in a mount namespace of their own. The machine's device keeps
// its mode.
func (s *Sandbox) AllowTUN(t testing.TB) { t.Helper(); s.setTUN(t, 0o666) }

// DenyTUN makes /dev/net/tun, as the commands AsUser prefixes see it, usable by root
// only (mode 0600).
func (s *Sandbox) DenyTUN(t testing.TB) { t.Helper(); s.setTUN(t, 0o600) }

func (s *Sandbox) setTUN(t testing.TB, mode uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/dev/net/tun", &st); err != nil {
		Missing(t, "needs /dev/net/tun: %v", err)
	}
	dir, err := os.MkdirTemp("", "ctnet-tun-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "tun")
	if err := unix.Mknod(node, unix.S_IFCHR|mode, int(st.Rdev)); err != nil {
		t.Fatalf("make a /dev/net/tun node: %v", err)
	}
	// Mknod's mode is filtered by the umask.
	if err := os.Chmod(node, os.FileMode(mode)); err != nil {
		t.Fatal(err)
	}
	s.tun = node
}

// Baseline is a snapshot of a process's goroutines and descriptors.
type Baseline struct {
	goroutines int
	fds        map[string]string
}

// TakeBaseline records the current goroutines and open descriptors.
func TakeBaseline() Baseline {
	return Baseline{goroutines: runtime.NumGoroutine(), fds: openFDs()}
}

func openFDs() map[string]string {
	fds := make(map[string]string)
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fds[e.Name()] = target
	}
	return fds
}

// CheckLeaks waits up to timeout for the process to return to b (garbage
// collection runs the finalizers of cached descriptors such as the splice
// pipe pool) and describes what is still there.
func (b Baseline) CheckLeaks(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		runtime.GC()
		runtime.GC()
		var extra []string
		for fd, target := range openFDs() {
			if _, ok := b.fds[fd]; !ok && !strings.HasSuffix(target, "/fd") {
				extra = append(extra, fd+"->"+target)
			}
		}
		n := runtime.NumGoroutine()
		if len(extra) == 0 && n <= b.goroutines {
			return nil
		}
		if time.Now().After(deadline) {
			sort.Strings(extra)
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("leaked descriptors %v; goroutines %d (baseline %d):\n%s", extra, n, b.goroutines, buf)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AsUser returns the argument prefix that runs a command as the test user
// inside the sandbox, with a clean environment (and the sandbox's /dev/net/tun).
func (s *Sandbox) AsUser(uid, gid int, env ...string) []string {
	var args []string
	if s.tun != "" {
		args = []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", `mount --bind "$0" /dev/net/tun && exec "$@"`, s.tun}
	}
	args = append(args, "setpriv", "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(gid),
		"--init-groups", "--reset-env", "env", "PATH=/usr/local/bin:/usr/bin:/bin")
	if raceEnabled {
		// Not the log path of Main, which the user cannot write: a race is reported
		// on standard error, and the exit status is 66.
		args = append(args, "GORACE="+raceExitNow)
	}
	return append(args, env...)
}
