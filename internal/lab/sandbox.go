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
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUserName is the unprivileged user rootless tests run as.
const TestUserName = "ctnettest"

// RequireRoot skips t unless it runs as root with the tools it needs.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces")
	}
	for _, tool := range []string{"ip", "nsenter", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// Sandbox is a network namespace standing in for the host of a test.
type Sandbox struct {
	Name string
	Path string
	// Boot, when set, is the boot the sandbox's commands run in (see NewBoot).
	Boot *Boot
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

// inNamespace runs fn on a thread switched into the sandbox; the thread is
// discarded afterwards rather than returned to the scheduler.
func (s *Sandbox) inNamespace(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the goroutine's end ends the thread.
		f, err := os.Open(s.Path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
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
		t.Skipf("needs user %s: %v", TestUserName, err)
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

var tunUsers struct {
	sync.Mutex
	count int
	lock  *os.File
	mode  os.FileMode
}

// AllowTUN makes /dev/net/tun usable by unprivileged users (0666, as
// Debian's udev would) for the test and restores the original mode when
// the last test in any process that needs it is done. An exclusive flock
// serialises the test packages that do this, so one never restores the
// mode under another.
func AllowTUN(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	tunUsers.Lock()
	defer tunUsers.Unlock()
	if tunUsers.count == 0 {
		lock, err := os.OpenFile("/run/ctnet-test-tun.lock", os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
			lock.Close()
			t.Fatal(err)
		}
		st, err := os.Stat("/dev/net/tun")
		if err != nil {
			lock.Close()
			t.Skipf("needs /dev/net/tun: %v", err)
		}
		if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
			lock.Close()
			t.Fatal(err)
		}
		tunUsers.lock, tunUsers.mode = lock, st.Mode().Perm()
	}
	tunUsers.count++
	t.Cleanup(func() {
		tunUsers.Lock()
		defer tunUsers.Unlock()
		tunUsers.count--
		if tunUsers.count > 0 {
			return
		}
		if err := os.Chmod("/dev/net/tun", tunUsers.mode); err != nil {
			t.Errorf("restore /dev/net/tun mode: %v", err)
		}
		tunUsers.lock.Close()
	})
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
// inside the sandbox, with a clean environment.
func (s *Sandbox) AsUser(uid, gid int, env ...string) []string {
	args := []string{"setpriv", "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid),
		"--init-groups", "--reset-env", "env", "PATH=/usr/local/bin:/usr/bin:/bin"}
	return append(args, env...)
}

// NamespaceInUse reports whether any process is still in the network
// namespace link names ("net:[inode]", as /proc/PID/ns/net reads).
func NamespaceInUse(link string) bool {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + p.Name() + "/ns/net"); err == nil && l == link {
			return true
		}
	}
	return false
}

// ProcessExists reports whether pid is alive (and not a zombie).
func ProcessExists(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
