package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/undo"
)

// rootlessControlSocket is the helper's socket for ExecRootless, in the
// container's runtime directory.
const rootlessControlSocket = "ctl.sock"

// opMapped tells the first-stage helper that its id maps are written.
const opMapped = "mapped"

// ErrNotRunning means there is no running rootless container to talk to.
var ErrNotRunning = errors.New("rootless container not running")

// RootlessSpec describes a container started by an unprivileged user.
type RootlessSpec struct {
	// Argv is CMD (resolved with the PATH of Env); Env its environment
	// (nil: this process's); Dir its working directory (empty: this
	// process's).
	Argv, Env []string
	Dir       string
	// Stdin, Stdout, Stderr are CMD's; nil means /dev/null.
	Stdin, Stdout, Stderr *os.File
	// Hostname, when set, gives the container its own UTS namespace.
	Hostname string
	// Network, when set, gives the container tap0 and a user-mode
	// network; nil leaves it only its loopback.
	Network *UserNetwork
	// RuntimeDir is the container's own directory (made 0700 if missing)
	// for its control socket; it is left empty when the container ends.
	RuntimeDir string
	// Files are bound over host paths in the container's mount namespace,
	// which every process of the container shares.
	Files []BindFile
}

// UserNetwork is a rootless container's user-mode network: how tap0 is set up
// inside, and the stack that serves tap0's other end from this process. The
// stack is given, not linked, so that the sandbox does not carry one.
type UserNetwork struct {
	// MTU is tap0's; Address its address and the subnet's length; Gateway
	// the default route's.
	MTU     uint32
	Address netip.Prefix
	Gateway netip.Addr
	// Address6 and Gateway6, when valid, give tap0 an IPv6 address (never
	// tentative: without duplicate address detection) and default route.
	Address6 netip.Prefix
	Gateway6 netip.Addr
	// Published are the container's ports that Start publishes on the host:
	// the helper routes the container's replies from them to the transparent
	// sockets that newInner makes.
	Published []GuestPort
	// Start runs the stack on tap (the host end of tap0, which it takes)
	// until the Closer closes. newInner makes a socket of proto ("tcp" or
	// "udp"; "tcp6" or "udp6" for IPv6) inside the container's network
	// namespace, for a published port's connections to reach the container
	// from the client's address.
	Start func(tap *os.File, newInner func(proto string) (*os.File, error)) (io.Closer, error)
}

// GuestPort is a port of the container published on the host.
type GuestPort struct {
	Proto string // "tcp" or "udp"
	Port  uint16
}

// RootlessContainer is a running rootless container.
type RootlessContainer struct {
	helper    *exec.Cmd
	lifecycle *net.UnixConn
	factory   *innerSocketFactory
	stack     io.Closer
	ctlPath   string
	pid       int

	done     chan struct{} // closed once CMD's status is known and the helper reaped
	exitCode int
	exitErr  error

	teardownOnce sync.Once
	teardownErr  error
}

// StartRootless starts spec.Argv in new user, network and PID namespaces
// (and a UTS namespace with spec.Hostname), with the user mapped to root,
// and returns once it runs. ctx bounds the start only.
//
// The work is split between this process and one helper process inside the
// namespaces (a re-execution of this binary, see RootlessChildMain): the
// helper does what needs the namespace's capabilities (lo, tap0, routes,
// transparent sockets) and runs CMD; this process runs the user-mode stack
// and the published ports' listeners, with the user's host sockets.
func StartRootless(ctx context.Context, spec RootlessSpec) (_ *RootlessContainer, err error) {
	if len(spec.Argv) == 0 {
		return nil, errors.New("start rootless container: empty command")
	}
	if spec.RuntimeDir == "" {
		return nil, errors.New("start rootless container: no runtime directory")
	}
	if n := spec.Network; n != nil {
		if n.Start == nil || !n.Address.Addr().Is4() || !n.Gateway.Is4() || n.MTU == 0 {
			return nil, errors.New("start rootless container: the user-mode network needs a stack, an IPv4 address and gateway, and an MTU")
		}
		if n.Address6.IsValid() != n.Gateway6.IsValid() || n.Address6.IsValid() && (!n.Address6.Addr().Is6() || !n.Gateway6.Is6()) {
			return nil, errors.New("start rootless container: the user-mode network's IPv6 side needs both an IPv6 address and gateway")
		}
	}
	env := spec.Env
	if env == nil {
		env = os.Environ()
	}

	var cleanup undo.Stack
	defer func() {
		if err != nil {
			cleanup.Unwind() // best effort: the error that stopped the start is the one to report
		}
	}()
	if err := os.MkdirAll(spec.RuntimeDir, 0o700); err != nil {
		return nil, fmt.Errorf("create runtime directory: %w", err)
	}
	ctlPath := filepath.Join(spec.RuntimeDir, rootlessControlSocket)
	execLn, err := listenControl(ctlPath)
	if err != nil {
		return nil, err
	}
	cleanup.Push("remove "+ctlPath, func() error { return os.Remove(ctlPath) })
	defer execLn.Close()

	lifecycle, lifecycleChild, err := seqpacketPair()
	if err != nil {
		return nil, err
	}
	defer lifecycleChild.Close()
	cleanup.Push("close lifecycle socket", lifecycle.Close)
	factoryConn, factoryChild, err := seqpacketPair()
	if err != nil {
		return nil, err
	}
	defer factoryChild.Close()
	cleanup.Push("close socket factory", factoryConn.Close)

	cloneFlags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNET | unix.CLONE_NEWPID)
	if spec.Hostname != "" {
		cloneFlags |= unix.CLONE_NEWUTS
	}
	if len(spec.Files) > 0 {
		cloneFlags |= unix.CLONE_NEWNS
	}
	helper := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{os.Args[0], RootlessChildArg},
		Env:         []string{},
		ExtraFiles:  []*os.File{lifecycleChild, factoryChild, execLn},
		SysProcAttr: &syscall.SysProcAttr{Cloneflags: cloneFlags},
	}
	// Assigned only when set: a nil *os.File in an io.Reader is not nil.
	if spec.Stdin != nil {
		helper.Stdin = spec.Stdin
	}
	if spec.Stdout != nil {
		helper.Stdout = spec.Stdout
	}
	if spec.Stderr != nil {
		helper.Stderr = spec.Stderr
	}
	if err := helper.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EACCES) {
			err = userNamespaceError(err)
		}
		return nil, fmt.Errorf("start rootless helper: %w", err)
	}
	cleanup.Push("kill rootless helper", func() error {
		helper.Process.Kill()
		return helper.Wait()
	})
	lifecycleChild.Close()
	factoryChild.Close()
	execLn.Close()

	// Replies are awaited under ctx: its end expires the read.
	stopDeadline := context.AfterFunc(ctx, func() { lifecycle.SetReadDeadline(time.Unix(1, 0)) })
	defer stopDeadline()
	await := func(want string) (rootlessMessage, []*os.File, error) {
		m, files, err := recvRootless(lifecycle)
		if err != nil {
			if ctx.Err() != nil {
				return m, nil, ctx.Err()
			}
			return m, nil, fmt.Errorf("helper exited during start: %w", err)
		}
		if m.Op == opError {
			closeFiles(files)
			return m, nil, helperError(m)
		}
		if m.Op != want {
			closeFiles(files)
			return m, nil, fmt.Errorf("expected %s message, got %q", want, m.Op)
		}
		return m, files, nil
	}

	if err := writeIDMaps(helper.Process.Pid); err != nil {
		return nil, fmt.Errorf("map ids of rootless helper: %w", err)
	}
	childCfg := &rootlessChildConfig{
		Argv: spec.Argv, Env: env, Dir: spec.Dir, Hostname: spec.Hostname, Files: spec.Files,
	}
	if n := spec.Network; n != nil {
		childCfg.UserNet, childCfg.MTU, childCfg.Guest, childCfg.Gateway, childCfg.Ports = true, n.MTU, n.Address, n.Gateway, n.Published
		childCfg.Guest6, childCfg.Gateway6 = n.Address6, n.Gateway6
	}
	if err := sendRootless(lifecycle, rootlessMessage{Op: opMapped}); err != nil {
		return nil, err
	}
	if err := sendRootless(lifecycle, rootlessMessage{Op: opConfig, Config: childCfg}); err != nil {
		return nil, err
	}
	_, files, err := await(opReady)
	if err != nil {
		return nil, fmt.Errorf("set up rootless namespaces: %w", err)
	}
	c := &RootlessContainer{
		helper:    helper,
		lifecycle: lifecycle,
		factory:   &innerSocketFactory{conn: factoryConn},
		ctlPath:   ctlPath,
		done:      make(chan struct{}),
	}
	if spec.Network != nil {
		if len(files) != 1 {
			closeFiles(files)
			return nil, errors.New("set up rootless namespaces: no tap descriptor")
		}
		c.stack, err = spec.Network.Start(files[0], c.factory.newInner)
		if err != nil {
			return nil, fmt.Errorf("start the user-mode network: %w", err)
		}
		cleanup.Push("close the user-mode network", c.stack.Close)
	} else {
		closeFiles(files)
	}

	if err := sendRootless(lifecycle, rootlessMessage{Op: opStart}); err != nil {
		return nil, err
	}
	m, _, err := await(opStarted)
	if err != nil {
		return nil, fmt.Errorf("start command: %w", err)
	}
	c.pid = m.PID
	stopDeadline()
	lifecycle.SetReadDeadline(time.Time{})
	go c.monitor()
	return c, nil
}

// listenControl creates the helper's exec socket (0600) and returns its
// descriptor for the helper; the parent removes the file at teardown.
func listenControl(path string) (*os.File, error) {
	if c, err := net.Dial("unixpacket", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen on %s: a container is running there", path)
	}
	os.Remove(path)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	f, err := ln.File()
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return f, nil
}

func helperError(m rootlessMessage) error {
	switch m.ErrKind {
	case errKindTUN:
		return fmt.Errorf("%w: %s", ErrTUNUnavailable, strings.TrimPrefix(m.Err, ErrTUNUnavailable.Error()+": "))
	case errKindUserNS:
		return fmt.Errorf("%w: %s", ErrUserNamespaceForbidden, strings.TrimPrefix(m.Err, ErrUserNamespaceForbidden.Error()+": "))
	}
	return errors.New(m.Err)
}

// hostPIDOf finds, among the helper's children, the one whose PID in the
// container's PID namespace is nsPID.
func hostPIDOf(helper, nsPID int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", helper))
	if err != nil {
		return 0, fmt.Errorf("find container process: %w", err)
	}
	want := strconv.Itoa(nsPID)
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", helper, t.Name()))
		if err != nil {
			continue
		}
		for _, child := range strings.Fields(string(b)) {
			if nsPIDs := readNSpid(child); len(nsPIDs) > 0 && nsPIDs[len(nsPIDs)-1] == want {
				return strconv.Atoi(child)
			}
		}
	}
	return 0, fmt.Errorf("find container process: pid %d of the container not among the helper's children", nsPID)
}

// readNSpid returns the NSpid field of /proc/PID/status: the process's PID
// in each PID namespace it is in, outermost first.
func readNSpid(pid string) []string {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			return strings.Fields(rest)
		}
	}
	return nil
}

// monitor waits for CMD's exit status, then for the helper.
func (c *RootlessContainer) monitor() {
	m, files, err := recvRootless(c.lifecycle)
	closeFiles(files)
	if err == nil && m.Op == opExited {
		c.exitCode = m.Code
	} else {
		c.exitCode = -1
		c.exitErr = fmt.Errorf("wait for container: helper died without a status: %w", ErrNotRunning)
	}
	c.helper.Wait()
	close(c.done)
}

// PID returns CMD's process id as seen from the host (CMD itself sees 2:
// the helper is PID 1 of the container's PID namespace).
func (c *RootlessContainer) PID() int { return c.pid }

// Wait waits for CMD to exit and tears the container down: the PID
// namespace ends with its helper (the kernel kills what CMD left behind),
// and with it the network namespace and tap0; the stack, its listeners and
// the control socket are closed. The exit code is CMD's, 128+n for death
// by signal n. Wait may be called more than once.
func (c *RootlessContainer) Wait() (exitCode int, err error) {
	<-c.done
	c.teardownOnce.Do(func() {
		var errs []error
		if c.stack != nil {
			errs = append(errs, c.stack.Close())
		}
		c.factory.close()
		c.lifecycle.Close()
		if err := os.Remove(c.ctlPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove control socket: %w", err))
		}
		c.teardownErr = errors.Join(errs...)
	})
	return c.exitCode, errors.Join(c.exitErr, c.teardownErr)
}

// innerSocketFactory asks the helper for transparent sockets, one request
// at a time.
type innerSocketFactory struct {
	mu   sync.Mutex
	conn *net.UnixConn
}

func (f *innerSocketFactory) newInner(proto string) (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := sendRootless(f.conn, rootlessMessage{Op: opSocket, Proto: proto}); err != nil {
		return nil, err
	}
	m, files, err := recvRootless(f.conn)
	if err != nil {
		return nil, err
	}
	if m.Op == opError {
		closeFiles(files)
		return nil, errors.New(m.Err)
	}
	if len(files) != 1 {
		closeFiles(files)
		return nil, errors.New("make inner socket: no descriptor in reply")
	}
	return files[0], nil
}

func (f *innerSocketFactory) close() {
	f.conn.Close()
}

// ExecRootless runs argv inside the running rootless container whose
// runtime directory is runtimeDir, in all of its namespaces, and returns
// its exit code. The container's helper starts it (this process, being
// multithreaded, cannot join a user namespace), with the given stdio
// passed over the control socket (nil: /dev/null) and env (nil: CMD's).
// Cancelling ctx kills it.
func ExecRootless(ctx context.Context, runtimeDir string, argv, env []string, stdin, stdout, stderr *os.File) (exitCode int, err error) {
	if len(argv) == 0 {
		return -1, errors.New("exec in rootless container: empty command")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", filepath.Join(runtimeDir, rootlessControlSocket))
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return -1, fmt.Errorf("exec in %s: %w", runtimeDir, ErrNotRunning)
		}
		return -1, fmt.Errorf("exec in %s: %w", runtimeDir, err)
	}
	uc := conn.(*net.UnixConn)
	defer uc.Close()
	stdio := []*os.File{stdin, stdout, stderr}
	for i, f := range stdio {
		if f == nil {
			null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
			if err != nil {
				return -1, fmt.Errorf("exec in %s: %w", runtimeDir, err)
			}
			defer null.Close()
			stdio[i] = null
		}
	}
	if err := sendRootless(uc, rootlessMessage{Op: opExec, Argv: argv, Env: env}, stdio...); err != nil {
		return -1, fmt.Errorf("exec in %s: %w", runtimeDir, err)
	}
	stop := context.AfterFunc(ctx, func() { uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := awaitExec(ctx, uc, argv[0], opStarted); err != nil {
		return -1, err
	}
	m, err := awaitExec(ctx, uc, argv[0], opExited)
	if err != nil {
		return -1, err
	}
	return m.Code, nil
}

// awaitExec receives the next message of an exec session, which must be
// want.
func awaitExec(ctx context.Context, c *net.UnixConn, name, want string) (rootlessMessage, error) {
	m, files, err := recvRootless(c)
	closeFiles(files)
	switch {
	case ctx.Err() != nil:
		return m, ctx.Err()
	case errors.Is(err, io.EOF):
		return m, fmt.Errorf("exec %s: %w", name, ErrNotRunning)
	case err != nil:
		return m, fmt.Errorf("exec %s: %w", name, err)
	case m.Op == opError:
		return m, fmt.Errorf("exec %s: %s", name, m.Err)
	case m.Op != want:
		return m, fmt.Errorf("exec %s: expected %s message, got %q", name, want, m.Op)
	}
	return m, nil
}
