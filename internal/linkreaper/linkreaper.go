// Package linkreaper deletes the links a command retired (link.RetiredGroup) in a
// process of its own, so that the command can exit before the kernel has finished:
// a process is reaped only once all its threads have left the kernel, and one stuck
// in a link's deletion waits there for RCU grace periods (about 20 ms). The process
// is the program's own executable, started with Arg: its main calls Main.
package linkreaper

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
)

// Arg is the first argument of the reaping process.
const Arg = "__ctnet_delete_retired"

// hostFD is the descriptor the reaping process gets the host namespace on.
const hostFD = 3

// Start starts the program again with Arg to delete the links retired in host, and
// does not wait for it. It runs in a session of its own, so that a terminal's
// signal to the command's process group does not stop it; were it stopped anyway,
// ctnet gc deletes what it left.
func Start(host *netns.NS) error {
	fd, err := unix.Dup(host.Fd())
	if err != nil {
		return fmt.Errorf("pass the host namespace on: %w", err)
	}
	f := os.NewFile(uintptr(fd), "host network namespace")
	defer f.Close()
	cmd := exec.Command("/proc/self/exe", Arg)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the deletion of retired links: %w", err)
	}
	// A long-lived caller (a supervisor) collects it; a command exits before it and
	// leaves it to init.
	go cmd.Wait()
	return nil
}

// Main deletes the retired links of the namespace Start passed on, reporting an
// error on standard error (which Start leaves at /dev/null) and in the exit status.
func Main() int {
	ns, err := netns.Open(fmt.Sprintf("/proc/self/fd/%d", hostFD))
	if err == nil {
		err = link.DeleteRetired(ns)
		ns.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ctnet:", err)
		return 1
	}
	return 0
}
