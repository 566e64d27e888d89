// Package sandbox starts a container's process inside its namespaces.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/netns"
)

// Spec describes the process to start.
type Spec struct {
	Argv           []string
	Env            []string // nil is the caller's environment
	Dir            string
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	ExtraFiles     []*os.File
	NetNS          string // network namespace path; empty is the caller's
	Hostname       string // when set, a new UTS namespace with this hostname
	UTSNS          string // otherwise, a UTS namespace to join (a path), if any
	NewSession     bool   // setsid: detach from the caller's terminal
	// TTY makes Stdin, a terminal, the process's controlling terminal, in a
	// session of its own.
	TTY bool
	// Credential, when set, is the user and group the process runs as.
	Credential *syscall.Credential
	// Files are bound over host paths in a mount namespace of the process's own,
	// from which the directories of namespace pins in DropPins are detached.
	Files    []BindFile
	DropPins []string
}

// BindFile covers Target with Source in a container's mount namespace.
type BindFile struct{ Source, Target string }

// Start starts the process in its namespaces, entered on a thread that netns.OnThread
// lends: it goes back to its own namespaces afterwards, or, when it made a mount
// namespace (which has its own root and working directory too) or cannot go back, it
// is discarded instead of reused.
func Start(spec Spec) (*exec.Cmd, error) {
	if len(spec.Argv) == 0 {
		return nil, errors.New("start process: no command given")
	}
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Env, cmd.Dir = spec.Env, spec.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = spec.Stdin, spec.Stdout, spec.Stderr, spec.ExtraFiles
	// Ctty is a descriptor of the child's: 0, its stdin.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: spec.NewSession || spec.TTY, Setctty: spec.TTY, Credential: spec.Credential}
	if cmd.Err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Argv[0], cmd.Err)
	}
	err := netns.OnThread(func(t *netns.Thread) error { return enterAndStart(t, spec, cmd) })
	if err != nil && cmd.Process == nil {
		return nil, err
	}
	// Started: a thread that could not go back to its namespaces has been discarded,
	// which is all that failure calls for.
	return cmd, nil
}

func enterAndStart(t *netns.Thread, spec Spec, cmd *exec.Cmd) error {
	if spec.NetNS != "" {
		if err := t.Enter(spec.NetNS, unix.CLONE_NEWNET); err != nil {
			return err
		}
	}
	switch {
	case spec.Hostname != "":
		if err := t.Unshare(unix.CLONE_NEWUTS); err != nil {
			return err
		}
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	case spec.UTSNS != "":
		if err := t.Enter(spec.UTSNS, unix.CLONE_NEWUTS); err != nil {
			return err
		}
	}
	if len(spec.Files) > 0 {
		if err := bindFiles(t, spec.Files, spec.DropPins); err != nil {
			return err
		}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", spec.Argv[0], err)
	}
	return nil
}

// bindFiles gives the calling thread a mount namespace of its own (unshare unshares
// its root and working directory with it, leaving the other threads alone) in which
// files cover host paths, without the copies of the host's namespace pins under the
// directories dropPins. The namespace is the host's slave: mounts made on the host
// later still appear in it, and nothing mounted in it leaks out.
func bindFiles(t *netns.Thread, files []BindFile, dropPins []string) error {
	if err := t.Unshare(unix.CLONE_NEWNS); err != nil {
		return err
	}
	if err := mountFiles(files); err != nil {
		return err
	}
	// Each copied pin would cost kernel memory for as long as the container runs: a
	// thousand containers would hold a million mounts between them.
	for _, dir := range dropPins {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("drop %s from the container's mounts: %w", dir, err)
		}
	}
	return nil
}

// mountFiles binds files in the caller's mount namespace, a new one.
func mountFiles(files []BindFile) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make the mount namespace a slave of the host's: %w", err)
	}
	for _, f := range files {
		if _, err := os.Stat(f.Target); err != nil {
			continue // the host has no such file (or a dangling link): nothing to cover
		}
		if err := unix.Mount(f.Source, f.Target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mount %s over %s: %w", f.Source, f.Target, err)
		}
	}
	return nil
}

// ExitCode is the status a shell would report for a finished process: its exit
// code, or 128+N if signal N killed it.
func ExitCode(state *os.ProcessState) int {
	if state == nil {
		return -1
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return state.ExitCode()
}
