package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/ctnet/ctnet/network"
	"github.com/ctnet/ctnet/sandbox"
	"github.com/ctnet/ctnet/usernet"
)

type stdio struct{ in, out, err *os.File }

// containerProcess is a container's running command, however it was started.
type containerProcess interface {
	pid() int // as seen from the host; 0 when not visible
	signal(syscall.Signal)
	wait() (exitCode int, err error)
}

// startProcess starts the container's command in its namespaces: directly as root;
// through the rootless sandbox (new user namespace, user-mode network) for an
// unprivileged user; inside another rootless container through its helper.
func startProcess(m *network.Manager, c *network.Container, io stdio) (containerProcess, error) {
	switch {
	case !m.Rootless() || c.Mode == network.ModeHost:
		spec, err := processSpec(m, c)
		if err != nil {
			return nil, err
		}
		spec.Argv, spec.Stdin, spec.Stdout, spec.Stderr = c.Command, io.in, io.out, io.err
		cmd, err := sandbox.Start(spec)
		if err != nil {
			return nil, err
		}
		return kernelProcess{cmd}, nil
	case c.Mode == network.ModeContainer:
		owner, err := m.Container(c.SharedWith)
		if err != nil {
			return nil, err
		}
		return startJoined(owner.RuntimeDir, c.Command, io), nil
	}
	spec := sandbox.RootlessSpec{
		Argv: c.Command, Stdin: io.in, Stdout: io.out, Stderr: io.err,
		Hostname: c.HostnameOrID(), RuntimeDir: c.RuntimeDir, Network: sandbox.RootlessNetworkNone,
	}
	spec.Files = bindFiles(c)
	if c.Mode == network.ModeUserNet {
		spec.Network = sandbox.RootlessNetworkUserNet
		spec.UserNet = usernet.Config{MTU: uint32(c.UserNet.MTU), Subnet: c.UserNet.Subnet,
			AllowHostLoopback: c.UserNet.AllowHostLoopback, Resolvers: c.UserNet.Resolvers, Logger: logger(io.err)}
		for _, p := range c.Ports {
			spec.Ports = append(spec.Ports, usernet.Port{Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort, ContainerPort: p.ContainerPort})
		}
	}
	rc, err := sandbox.StartRootless(context.Background(), spec)
	if err != nil {
		return nil, err
	}
	return rootlessProcess{rc}, nil
}

// setMounts gives a root container's process the files that cover the host's
// /etc/resolv.conf, hosts and hostname, in a mount namespace without the host's
// namespace pins. filesOf is the container whose files they are: its own, or in
// container:NAME mode NAME's.
func setMounts(m *network.Manager, filesOf *network.Container, spec *sandbox.Spec) {
	if files := bindFiles(filesOf); len(files) > 0 {
		spec.Files, spec.DropPins = files, m.PinDirs()
	}
}

func bindFiles(filesOf *network.Container) []sandbox.BindFile {
	var binds []sandbox.BindFile
	for _, f := range network.EtcFiles(filesOf) {
		binds = append(binds, sandbox.BindFile(f))
	}
	return binds
}

// processSpec says which namespaces a root container's process enters, with the
// files it sees.
func processSpec(m *network.Manager, c *network.Container) (sandbox.Spec, error) {
	var spec sandbox.Spec
	switch c.Mode {
	case network.ModeHost:
		return spec, nil
	case network.ModeContainer:
		spec.NetNS = c.NetNS
		owner, err := m.Container(c.SharedWith)
		if err != nil {
			return spec, err
		}
		if owner.Process.Alive() {
			spec.UTSNS = "/proc/" + strconv.Itoa(owner.Process.PID) + "/ns/uts"
		}
		setMounts(m, owner, &spec)
		return spec, nil
	}
	spec.NetNS = c.NetNS
	spec.Hostname = c.HostnameOrID()
	setMounts(m, c, &spec)
	return spec, nil
}

type kernelProcess struct{ cmd *exec.Cmd }

func (k kernelProcess) pid() int                { return k.cmd.Process.Pid }
func (k kernelProcess) signal(s syscall.Signal) { k.cmd.Process.Signal(s) }
func (k kernelProcess) wait() (int, error) {
	k.cmd.Wait()
	return sandbox.ExitCode(k.cmd.ProcessState), nil
}

type rootlessProcess struct{ c *sandbox.RootlessContainer }

func (r rootlessProcess) pid() int                { return r.c.PID() }
func (r rootlessProcess) signal(s syscall.Signal) { syscall.Kill(r.c.PID(), s) }
func (r rootlessProcess) wait() (int, error)      { return r.c.Wait() }

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

func startJoined(runtimeDir string, argv []string, io stdio) joinedProcess {
	ctx, cancel := context.WithCancel(context.Background())
	j := joinedProcess{cancel: cancel, done: make(chan joinedResult, 1)}
	go func() {
		code, err := sandbox.ExecRootless(ctx, runtimeDir, argv, nil, io.in, io.out, io.err)
		if err != nil {
			err = fmt.Errorf("run in the shared container: %w", err)
		}
		j.done <- joinedResult{code, err}
	}()
	return j
}

func (j joinedProcess) pid() int { return 0 }
func (j joinedProcess) signal(s syscall.Signal) {
	if s == syscall.SIGTERM || s == syscall.SIGINT || s == syscall.SIGKILL || s == syscall.SIGHUP {
		j.cancel()
	}
}
func (j joinedProcess) wait() (int, error) {
	r := <-j.done
	j.cancel()
	return r.code, r.err
}
