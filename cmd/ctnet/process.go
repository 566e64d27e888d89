package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/ctnet/ctnet/internal/usernetproc"
	"github.com/ctnet/ctnet/network"
	"github.com/ctnet/ctnet/sandbox"
)

// startUserNet is the user-mode network of an unprivileged user's containers:
// usernet's stack on the container's TAP device, with its published ports, in the
// ctnet-usernet helper beside this executable, so that only rootless containers'
// supervisors load gVisor.
func startUserNet(tap *os.File, cfg network.UserNetConfig) (io.Closer, error) {
	helper, err := usernetproc.Helper()
	if err != nil {
		tap.Close()
		return nil, err
	}
	served := usernetproc.Config{MTU: uint32(cfg.MTU), Subnet: cfg.Subnet, AllowHostLoopback: cfg.AllowHostLoopback, Resolvers: cfg.Resolvers}
	for _, p := range cfg.Ports {
		served.Ports = append(served.Ports, usernetproc.Port{Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort, ContainerPort: p.ContainerPort})
	}
	n, err := usernetproc.Start(helper, tap, served, cfg.NewInnerSocket, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("start usernet: %w", err)
	}
	return n, nil
}

// startFailureCode is exec's status for a command that did not start, as a shell's.
func startFailureCode(err error) int {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
		return exitCommandMissing
	case errors.Is(err, os.ErrPermission):
		return exitCannotExecute
	}
	return exitRunFailure
}

// setMounts gives a root container's exec'd process the files that cover the
// host's /etc/resolv.conf, hosts and hostname, in a mount namespace without the
// host's namespace pins. filesOf is the container whose files they are: its own, or
// in container:NAME mode NAME's.
func setMounts(m *network.Manager, filesOf *network.Container, spec *sandbox.Spec) {
	var files []sandbox.BindFile
	for _, f := range network.EtcFiles(filesOf) {
		files = append(files, sandbox.BindFile(f))
	}
	if len(files) > 0 {
		spec.Files, spec.DropPins = files, m.PinDirs()
	}
}
