package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/undo"
	"github.com/ctnet/ctnet/netns"
)

// The lab's addresses: the sandbox host's uplink and the "wan" namespace behind it
// (TEST-NET-3, and for IPv6 a documentation prefix), as in internal/lab.
const (
	hostUplinkIP  = "203.0.113.1"
	wanIP         = "203.0.113.2"
	hostUplinkIP6 = "2001:db8:ff::1"
	wanIP6        = "2001:db8:ff::2"
)

// nsThread is an OS thread parked in one network namespace. Processes started from
// it are born in that namespace (the kernel copies the forking thread's namespaces),
// and sockets opened on it belong to it, so the harness never pays for nsenter in
// a timed region and never switches its own threads back and forth.
type nsThread struct {
	path string
	jobs chan func()
}

func newNSThread(path string) (*nsThread, error) {
	t := &nsThread{path: path, jobs: make(chan func())}
	entered := make(chan error, 1)
	go netns.OnThread(func(th *netns.Thread) error {
		err := th.Enter(path, unix.CLONE_NEWNET)
		entered <- err
		if err != nil {
			return err
		}
		for job := range t.jobs {
			job()
		}
		return nil
	})
	if err := <-entered; err != nil {
		return nil, err
	}
	return t, nil
}

// do runs fn on the thread and waits for it.
func (t *nsThread) do(fn func()) {
	done := make(chan struct{})
	t.jobs <- func() {
		defer close(done)
		fn()
	}
	<-done
}

func (t *nsThread) close() { close(t.jobs) }

// start starts cmd inside the thread's namespace.
func (t *nsThread) start(cmd *exec.Cmd) error {
	var err error
	t.do(func() { err = cmd.Start() })
	return err
}

// run runs argv inside the namespace with stdin and extra environment, and returns
// its stdout; the error carries stderr.
func (t *nsThread) run(ctx context.Context, stdin []byte, env []string, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := t.start(cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	if err := cmd.Wait(); err != nil {
		// CNI plugins and netavark report errors as JSON on stdout.
		msg := strings.TrimSpace(stderr.String() + " " + stdout.String())
		if len(msg) > 400 {
			msg = msg[:400] + "…"
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// commandLine is a command prefix (setpriv, nsenter, ctnet exec) followed by args,
// in an array of its own: command lines built on one prefix never overwrite each
// other.
func commandLine(prefix []string, args ...string) []string {
	return append(slices.Clip(prefix), args...)
}

// runAll runs each command in turn and stops at the first failure.
func (t *nsThread) runAll(ctx context.Context, cmds [][]string) error {
	for _, argv := range cmds {
		if _, err := t.run(ctx, nil, nil, argv...); err != nil {
			return err
		}
	}
	return nil
}

// tcpNetwork is "tcp" for an IPv6 address, so that "[::]:PORT" listens on both
// families, and "tcp4" for everything else, as the harness had it before IPv6.
func tcpNetwork(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		return "tcp"
	}
	return "tcp4"
}

// listen opens a TCP listener inside the namespace.
func (t *nsThread) listen(addr string) (net.Listener, error) {
	var ln net.Listener
	var err error
	t.do(func() { ln, err = net.Listen(tcpNetwork(addr), addr) })
	return ln, err
}

// dial connects from inside the namespace.
func (t *nsThread) dial(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	t.do(func() { c, err = net.DialTimeout(tcpNetwork(addr), addr, timeout) })
	return c, err
}

// lab is one sandbox: a "host" namespace with a "wan" namespace behind its uplink,
// on both families. Every tool run gets a fresh one, so no tool inherits another's
// rules.
type lab struct {
	id        string
	hostPath  string
	wanPath   string
	host, wan *nsThread
	clean     *undo.Stack
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// addNetNS makes a named namespace (as `ip netns add` does, which the peers' scripts
// use too) and registers its removal.
func addNetNS(ctx context.Context, clean *undo.Stack, name string) (string, error) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	clean.Push("namespace "+name, func() error { return delNetNS(name) })
	return "/run/netns/" + name, nil
}

func delNetNS(name string) error {
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, out)
	}
	return nil
}

func newLab(ctx context.Context, clean *undo.Stack) (*lab, error) {
	l := &lab{id: randomHex(4), clean: clean}
	var err error
	if l.hostPath, err = addNetNS(ctx, clean, "ctb-"+l.id); err != nil {
		return nil, err
	}
	if l.wanPath, err = addNetNS(ctx, clean, "ctbw-"+l.id); err != nil {
		return nil, err
	}
	if l.host, err = newNSThread(l.hostPath); err != nil {
		return nil, err
	}
	clean.Push("host namespace thread", func() error { l.host.close(); return nil })
	if l.wan, err = newNSThread(l.wanPath); err != nil {
		return nil, err
	}
	clean.Push("wan namespace thread", func() error { l.wan.close(); return nil })
	// The uplink is made from the host side with its peer born in the wan namespace.
	err = l.host.runAll(ctx, [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "wan0", "netns", l.wanPath},
		{"ip", "addr", "add", hostUplinkIP + "/24", "dev", "uplink0"},
		{"ip", "link", "set", "uplink0", "up"},
		{"ip", "route", "add", "default", "via", wanIP},
		{"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
	})
	if err != nil {
		return nil, err
	}
	// The IPv6 addresses skip duplicate address detection, so that they are usable
	// at once; the default route goes in once the gateway's link is up.
	err = l.wan.runAll(ctx, [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", wanIP + "/24", "dev", "wan0"},
		{"ip", "addr", "add", wanIP6 + "/64", "dev", "wan0", "nodad"},
		{"ip", "link", "set", "wan0", "up"},
	})
	if err != nil {
		return nil, err
	}
	err = l.host.runAll(ctx, [][]string{
		{"ip", "addr", "add", hostUplinkIP6 + "/64", "dev", "uplink0", "nodad"},
		{"ip", "-6", "route", "add", "default", "via", wanIP6},
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// containerNS names container i's namespace in this lab.
func (l *lab) containerNS(i int) string { return fmt.Sprintf("ctbc%s-%d", l.id, i) }

// containerNSPath is where `ip netns add` pinned container i's namespace.
func (l *lab) containerNSPath(i int) string { return "/run/netns/" + l.containerNS(i) }

// addContainerNamespaces makes the namespaces of containers 1..n, outside any timed
// region (the peers' scripts make them with `ip netns add` beforehand too).
func (l *lab) addContainerNamespaces(ctx context.Context, n int) error {
	for i := 1; i <= n; i++ {
		if _, err := addNetNS(ctx, l.clean, l.containerNS(i)); err != nil {
			return err
		}
	}
	return nil
}

// background starts a long-running process inside a namespace and registers that
// it be killed (by its PID) and reaped.
func background(clean *undo.Stack, t *nsThread, argv ...string) (*exec.Cmd, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := t.start(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(argv, " "), err)
	}
	clean.Push("process "+argv[0], func() error {
		cmd.Process.Kill()
		cmd.Wait()
		return nil
	})
	return cmd, nil
}

// waitListening waits until something accepts TCP connections at addr, seen from t.
func waitListening(ctx context.Context, t *nsThread, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := t.dial(addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("nothing listens on %s in %s: %w", addr, t.path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
