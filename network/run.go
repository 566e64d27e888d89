package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/sandbox"
)

// Exit statuses Run records for a command that did not run, as a shell's and
// Docker's.
const (
	exitRunFailure     = 125 // ctnet failed
	exitCannotExecute  = 126
	exitCommandMissing = 127
)

// RunOptions are what a container's command gets besides its arguments
// (ContainerSpec.Command).
type RunOptions struct {
	// Env is the command's environment; nil is this process's.
	Env []string
	// Stdin, Stdout and Stderr are the command's; nil is /dev/null.
	Stdin, Stdout, Stderr *os.File
	// TTY says Stdin is a terminal to make the command's controlling terminal
	// (root's containers; an unprivileged user's get it as their stdio only).
	TTY bool
	// Dir is the command's working directory; empty is this process's.
	Dir string
	// User, when set, is the user and group a root container's command runs as
	// (an unprivileged user's runs as that user).
	User *syscall.Credential
	// Log sends the command's stdout and stderr (Stdout and Stderr must be nil) to
	// the container's log, apart and with times (OpenLog reads it), with a line on
	// stderr for each failure of ctnet's in starting or releasing it.
	Log bool
}

// UserNetStack starts the user-mode network of an unprivileged user's container
// (Options.Rootless) on tap, the host end of the container's TAP device, which it
// takes; the network lives until the Closer closes. ctnet's is package usernet's
// stack, which package network does not link, so that a program without rootless
// containers does not carry it.
type UserNetStack func(tap *os.File, cfg UserNetConfig) (io.Closer, error)

// UserNetConfig is what a container's user-mode network serves.
type UserNetConfig struct {
	// UserNet is the container's subnet, MTU, whether the gateway stands for the
	// host's loopback, and the resolvers DNS queries go to (empty: the host's).
	UserNet
	// Ports are the container's published ports.
	Ports []Port
	// NewInnerSocket makes a socket of proto ("tcp" or "udp") inside the
	// container's namespace, through which a published port's connection reaches
	// the container from the client's own address.
	NewInnerSocket func(proto string) (*os.File, error)
	// Logger receives the stack's diagnostics.
	Logger *slog.Logger
}

// StartError is Run's error when the container was created but its command did not
// start. The container is released, with Code as its exit status: 127 when the
// command was not found, 126 when it could not be executed, 125 when ctnet failed.
type StartError struct {
	Container *Container
	Code      int
	Err       error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// LogPath is the plain log of a container an older ctnet ran with RunOptions.Log;
// OpenLog reads it, and the records that have replaced it (logs.go). Both live in
// the container's runtime directory, so until Remove.
func LogPath(c *Container) string { return filepath.Join(c.RuntimeDir, "log") }

// Process is a container's command, started by Run.
type Process struct {
	// Container is the container, as it is once its command runs.
	Container *Container

	m       *Manager
	started startedProcess
	stopDNS func()
	nsIno   uint64        // the container's own namespace, 0 for none
	log     *containerLog // RunOptions.Log's, else nil
	devNull *os.File      // the command's stdio that RunOptions left nil, else nil

	waitOnce sync.Once
	exitCode int
	waitErr  error
}

// startedProcess is a container's command, however it was started.
type startedProcess interface {
	pid() int // as seen from the host; 0 when not visible
	signal(syscall.Signal) error
	wait() (exitCode int, err error)
}

// Run creates a container as Create does and runs spec.Command in it: the
// container's embedded DNS server starts first, then the command; the container is
// "running" when Run returns. ctx bounds the creation and the start only. The
// caller waits for the command with Wait, which releases the container's network.
func (m *Manager) Run(ctx context.Context, spec ContainerSpec, opts RunOptions) (*Process, error) {
	if len(spec.Command) == 0 {
		return nil, badField("Command", "", "give the command to run")
	}
	if spec.NetNS != "" {
		return nil, badField("NetNS", spec.NetNS, "an attached namespace has no process of ctnet's: use Create")
	}
	if opts.Log && (opts.Stdout != nil || opts.Stderr != nil) {
		return nil, invalid("RunOptions: Log replaces Stdout and Stderr")
	}
	if m.rootless && opts.Dir != "" && spec.Network.Kind == ModeContainer {
		return nil, invalid("RunOptions.Dir: a command in another unprivileged container starts in that container's directory")
	}
	if m.rootless && opts.User != nil {
		return nil, invalid("RunOptions.User: an unprivileged user's container runs as that user")
	}
	if m.rootless && m.userNet == nil && (spec.Network.Kind == "" || spec.Network.Kind == ModeUserNet) {
		return nil, invalid("a rootless container on a user-mode network needs a stack: set Options.UserNet")
	}
	c, err := m.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	p := &Process{Container: c, m: m, stopDNS: func() {}}
	// The namespace is identified before the command starts: Remove may unmount it
	// while the command still runs.
	if c.OwnsNetNS {
		p.nsIno = proc.NetNSInode(c.NetNS)
	}
	if err := p.start(ctx, opts); err != nil {
		code := exitRunFailure
		switch {
		case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
			code = exitCommandMissing
		case errors.Is(err, os.ErrPermission):
			code = exitCannotExecute
		}
		if rerr := m.exited(context.Background(), c.ID, code); rerr != nil {
			err = errors.Join(err, rerr)
		}
		p.logFailure(err)
		p.closeFiles()
		return nil, &StartError{Container: c, Code: code, Err: err}
	}
	return p, nil
}

// start starts the container's command after its DNS server, and records it; on
// error, nothing of either is left.
func (p *Process) start(ctx context.Context, opts RunOptions) (err error) {
	c, m := p.Container, p.m
	if opts.Log {
		if err := os.MkdirAll(c.RuntimeDir, 0o700); err != nil {
			return fmt.Errorf("create runtime directory: %w", err)
		}
		if p.log, err = openContainerLog(c); err != nil {
			return fmt.Errorf("open container log: %w", err)
		}
		if opts.Stdout, err = p.log.stream("stdout"); err != nil {
			return fmt.Errorf("open container log: %w", err)
		}
		if opts.Stderr, err = p.log.stream("stderr"); err != nil {
			return fmt.Errorf("open container log: %w", err)
		}
	}
	// A nil *os.File in sandbox.Spec's io.Reader and io.Writer would not be nil.
	if opts.Stdin == nil || opts.Stdout == nil || opts.Stderr == nil {
		devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		// Kept until the command has ended: a command in another rootless
		// container (startJoined) is handed its files after start returns.
		p.devNull = devNull
		for _, f := range []**os.File{&opts.Stdin, &opts.Stdout, &opts.Stderr} {
			if *f == nil {
				*f = devNull
			}
		}
	}
	// The DNS server's sockets exist before the command does, and close before the
	// network is released: they hold the namespace.
	if p.stopDNS, err = m.serveDNS(c); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			p.stopDNS()
		}
	}()
	if p.started, err = m.startProcess(ctx, c, opts); err != nil {
		return err
	}
	var id proc.ID // stays zero when the command runs where its PID is not visible
	if pid := p.started.pid(); pid > 0 {
		if id, err = proc.Identify(pid); err != nil {
			id = proc.ID{PID: pid, BootID: proc.BootID()}
		}
	}
	if err := m.recordStarted(ctx, c.ID, ProcessID(id)); err != nil {
		p.started.signal(syscall.SIGKILL)
		p.started.wait()
		return err
	}
	p.Container.Process, p.Container.State = ProcessID(id), StateRunning
	return nil
}

// Signal sends sig to the container's command. A command in another rootless
// container's namespaces (container:NAME) can only be ended: SIGTERM, SIGINT,
// SIGHUP and SIGKILL end it, other signals are dropped.
func (p *Process) Signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("signal %v: not a syscall.Signal", sig)
	}
	return p.started.signal(s)
}

// Wait waits for the command to end and releases the container's network: its DNS
// server stops, what the command left in the namespace is killed, and the
// container is "exited" (or removed, with AutoRemove). The exit code is the
// command's, 128+N when signal N ended it. Wait may be called more than once.
func (p *Process) Wait() (exitCode int, err error) {
	p.waitOnce.Do(func() {
		code, werr := p.started.wait()
		p.stopDNS()
		proc.KillInNetNS(p.nsIno) // what the command left behind ends with it
		if err := p.m.exited(context.Background(), p.Container.ID, code); err != nil {
			werr = errors.Join(werr, fmt.Errorf("release container %s: %w", p.Container.Name, err))
		}
		p.logFailure(werr)
		p.closeFiles()
		p.exitCode, p.waitErr = code, werr
	})
	return p.exitCode, p.waitErr
}

func (p *Process) logFailure(err error) {
	if p.log != nil && err != nil {
		p.log.write("stderr", fmt.Sprintf("ctnet: %s\n", strings.ReplaceAll(err.Error(), "\n", "; ")))
	}
}

// closeFiles closes the files the command's stdio came from, once it has ended.
func (p *Process) closeFiles() {
	if p.log != nil {
		p.log.close()
	}
	if p.devNull != nil {
		p.devNull.Close()
	}
}

// startProcess starts the container's command in its namespaces: directly as root;
// through the rootless sandbox (new user namespace, user-mode network) for an
// unprivileged user; inside another rootless container through its helper.
func (m *Manager) startProcess(ctx context.Context, c *Container, opts RunOptions) (startedProcess, error) {
	switch {
	case !m.rootless || c.Mode == ModeHost:
		spec, err := m.processSpec(c)
		if err != nil {
			return nil, err
		}
		spec.Argv, spec.Env, spec.Stdin, spec.Stdout, spec.Stderr = c.Command, opts.Env, opts.Stdin, opts.Stdout, opts.Stderr
		spec.Dir, spec.TTY, spec.Credential = opts.Dir, opts.TTY, opts.User
		cmd, err := sandbox.Start(spec)
		if err != nil {
			return nil, err
		}
		return kernelProcess{cmd}, nil
	case c.Mode == ModeContainer:
		owner, err := m.Container(c.SharedWith)
		if err != nil {
			return nil, err
		}
		return startJoined(owner.RuntimeDir, c.Command, opts), nil
	}
	spec := sandbox.RootlessSpec{
		Argv: c.Command, Env: opts.Env, Dir: opts.Dir, Stdin: opts.Stdin, Stdout: opts.Stdout, Stderr: opts.Stderr,
		Hostname: c.HostnameOrID(), RuntimeDir: c.RuntimeDir, Files: bindFiles(c),
	}
	if c.Mode == ModeUserNet {
		spec.Network = m.userNetwork(c, opts.Stderr)
	}
	rc, err := sandbox.StartRootless(ctx, spec)
	if err != nil {
		return nil, err
	}
	return rootlessProcess{rc}, nil
}

// userNetwork is the user-mode network of c, served by the stack Options.UserNet
// gives; the stack's warnings (ping not permitted, a resolver down) go where the
// command's errors go.
func (m *Manager) userNetwork(c *Container, stderr *os.File) *sandbox.UserNetwork {
	layout, v6 := userNetAddrs(c.UserNet.Subnet), userNetIPv6
	n := &sandbox.UserNetwork{
		MTU: uint32(c.UserNet.MTU), Address: netip.PrefixFrom(layout.Guest, layout.Subnet.Bits()), Gateway: layout.Gateway,
		Address6: netip.PrefixFrom(v6.Guest, v6.Subnet.Bits()), Gateway6: v6.Gateway,
	}
	for _, p := range c.Ports {
		n.Published = append(n.Published, sandbox.GuestPort{Proto: p.Proto, Port: p.ContainerPort})
	}
	logger := m.log
	if stderr != nil {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	n.Start = func(tap *os.File, newInner func(proto string) (*os.File, error)) (io.Closer, error) {
		return m.userNet(tap, UserNetConfig{UserNet: *c.UserNet, Ports: c.Ports, NewInnerSocket: newInner, Logger: logger})
	}
	return n
}

// processSpec says which namespaces a root container's command enters, with the
// files it sees.
func (m *Manager) processSpec(c *Container) (sandbox.Spec, error) {
	var spec sandbox.Spec
	switch c.Mode {
	case ModeHost:
		return spec, nil
	case ModeContainer:
		spec.NetNS = c.NetNS
		owner, err := m.Container(c.SharedWith)
		if err != nil {
			return spec, err
		}
		if owner.Process.Alive() {
			spec.UTSNS = "/proc/" + strconv.Itoa(owner.Process.PID) + "/ns/uts"
		}
		m.setMounts(owner, &spec)
		return spec, nil
	}
	spec.NetNS = c.NetNS
	spec.Hostname = c.HostnameOrID()
	m.setMounts(c, &spec)
	return spec, nil
}

// setMounts gives a root container's command the files that cover the host's
// /etc/resolv.conf, hosts and hostname, in a mount namespace without the host's
// namespace pins. filesOf is the container whose files they are: its own, or in
// container:NAME mode NAME's.
func (m *Manager) setMounts(filesOf *Container, spec *sandbox.Spec) {
	if files := bindFiles(filesOf); len(files) > 0 {
		spec.Files, spec.DropPins = files, m.PinDirs()
	}
}

func bindFiles(filesOf *Container) []sandbox.BindFile {
	var binds []sandbox.BindFile
	for _, f := range EtcFiles(filesOf) {
		binds = append(binds, sandbox.BindFile(f))
	}
	return binds
}

type kernelProcess struct{ cmd *exec.Cmd }

func (k kernelProcess) pid() int                      { return k.cmd.Process.Pid }
func (k kernelProcess) signal(s syscall.Signal) error { return k.cmd.Process.Signal(s) }
func (k kernelProcess) wait() (int, error) {
	k.cmd.Wait()
	return sandbox.ExitCode(k.cmd.ProcessState), nil
}

type rootlessProcess struct{ c *sandbox.RootlessContainer }

func (r rootlessProcess) pid() int                      { return r.c.PID() }
func (r rootlessProcess) signal(s syscall.Signal) error { return syscall.Kill(r.c.PID(), s) }
func (r rootlessProcess) wait() (int, error)            { return r.c.Wait() }

// joinedProcess runs inside another rootless container, started by that
// container's helper; it can only be ended, through the exec request.
type joinedProcess struct {
	cancel context.CancelFunc
	done   chan joinedResult
}

type joinedResult struct {
	code int
	err  error
}

func startJoined(runtimeDir string, argv []string, opts RunOptions) joinedProcess {
	ctx, cancel := context.WithCancel(context.Background())
	j := joinedProcess{cancel: cancel, done: make(chan joinedResult, 1)}
	go func() {
		code, err := sandbox.ExecRootless(ctx, runtimeDir, argv, opts.Env, opts.Stdin, opts.Stdout, opts.Stderr)
		if err != nil {
			err = fmt.Errorf("run in the shared container: %w", err)
		}
		j.done <- joinedResult{code, err}
	}()
	return j
}

func (j joinedProcess) pid() int { return 0 }
func (j joinedProcess) signal(s syscall.Signal) error {
	if s == syscall.SIGTERM || s == syscall.SIGINT || s == syscall.SIGKILL || s == syscall.SIGHUP {
		j.cancel()
	}
	return nil
}
func (j joinedProcess) wait() (int, error) {
	r := <-j.done
	j.cancel()
	return r.code, r.err
}
