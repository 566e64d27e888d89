// Package proc identifies processes across PID reuse and waits for processes that are
// not the caller's children.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ID names one process for its whole life: a PID is reused, a PID with its start time
// on one boot is not.
type ID struct {
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"start_time,omitempty"` // clock ticks after boot
	BootID    string `json:"boot_id,omitempty"`
}

// Valid reports whether the ID names a process at all.
func (id ID) Valid() bool { return id.PID > 0 }

var (
	bootOnce sync.Once
	bootID   string
)

// BootID is the kernel's identifier of the current boot.
func BootID() string {
	bootOnce.Do(func() {
		b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		bootID = strings.TrimSpace(string(b))
	})
	return bootID
}

// Identify returns the ID of the running process pid.
func Identify(pid int) (ID, error) {
	st, err := startTime(pid)
	if err != nil {
		return ID{}, err
	}
	return ID{PID: pid, StartTime: st, BootID: BootID()}, nil
}

// Self is the calling process's ID.
func Self() ID {
	id, err := Identify(os.Getpid())
	if err != nil {
		// /proc is missing: fall back to the PID alone, which still identifies us while we run.
		return ID{PID: os.Getpid(), BootID: BootID()}
	}
	return id
}

func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); start time is field 22.
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	if fields[0] == "Z" || fields[0] == "X" {
		return 0, errZombie
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

var errZombie = errors.New("process has exited")

// Alive reports whether the process the ID names is still running (a zombie is not).
func (id ID) Alive() bool {
	if !id.Valid() || id.BootID != BootID() {
		return false
	}
	st, err := startTime(id.PID)
	return err == nil && (id.StartTime == 0 || st == id.StartTime)
}

// Open returns a pidfd for the process the ID names, or an error if it is gone.
func (id ID) Open() (int, error) {
	fd, err := unix.PidfdOpen(id.PID, 0)
	if err != nil {
		return -1, err
	}
	// Checked after opening: from here on the pidfd cannot be recycled.
	if !id.Alive() {
		unix.Close(fd)
		return -1, unix.ESRCH
	}
	return fd, nil
}

// Signal sends sig to the process the ID names; a process that is already gone is
// not an error.
func (id ID) Signal(sig unix.Signal) error {
	fd, err := id.Open()
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signal process %d: %w", id.PID, err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal process %d: %w", id.PID, err)
	}
	return nil
}

// Wait waits up to timeout for the process the ID names to end and reports whether it
// did. It works for processes that are not children of the caller.
func (id ID) Wait(timeout time.Duration) bool {
	fd, err := id.Open()
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms < 0 {
			ms = 0
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if n > 0 {
			return true
		}
		// A zombie is readable on its pidfd only once reaped by its parent; for our
		// purpose an exited process is gone.
		if !id.Alive() {
			return true
		}
		if ms == 0 || err != nil {
			return false
		}
	}
}

// AwaitEnd waits until process pid has ended, or ctx has (then it returns ctx's
// error), or the wait failed, on a pidfd the runtime's poller watches: unlike a blocking wait, no OS
// thread is held for it, which an idle supervisor would pay for with the thread's
// stacks. A child is still to be reaped afterwards. A process gone already ends
// the wait at once; so does a PID reused meanwhile only after the new process ends.
func AwaitEnd(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return ctx.Err() // gone already
	}
	// Nonblocking, so that the os package gives it to the runtime's poller.
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	stop := context.AfterFunc(ctx, func() { pidfd.SetReadDeadline(time.Now()) })
	defer stop()
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return err
	}
	// A pidfd is readable once its process has ended; the first call only has
	// the poller wait for that.
	waited := false
	err = rc.Read(func(uintptr) bool {
		done := waited
		waited = true
		return done
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("wait for process %d: %w", pid, err)
	}
	return nil
}

// NetNSInode is the identity of the network namespace at path (a bind mount or a
// /proc/PID/ns/net link), or 0 if it cannot be read.
func NetNSInode(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// KillInNetNS kills every process whose network namespace is ino (except the
// caller), repeating until none is left, and returns how many it killed. A
// container's processes live exactly as long as the container: what its main
// process left behind must not linger in a namespace whose network is gone.
func KillInNetNS(ino uint64) int {
	killed := 0
	for range 20 {
		pids := livePIDsInNetNS(ino)
		if len(pids) == 0 {
			return killed
		}
		for _, pid := range pids {
			if unix.Kill(pid, unix.SIGKILL) == nil {
				killed++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return killed
}

// NetNSInUse reports whether a live process (not a zombie) is in the network
// namespace whose inode is ino.
func NetNSInUse(ino uint64) bool {
	return len(livePIDsInNetNS(ino)) > 0
}

// InNetNS lists the live processes in the network namespace whose inode is ino.
func InNetNS(ino uint64) []int {
	if ino == 0 {
		return nil
	}
	return Find(func(pid int) bool { return NetNSInode("/proc/"+strconv.Itoa(pid)+"/ns/net") == ino })
}

// livePIDsInNetNS is InNetNS without the caller, which must not kill itself.
func livePIDsInNetNS(ino uint64) []int {
	self := os.Getpid()
	var others []int
	for _, pid := range InNetNS(ino) {
		if pid != self && !visiting(pid, ino) {
			others = append(others, pid)
		}
	}
	return others
}

// visiting reports whether a process whose main thread is in the network namespace
// ino has a thread in another one: a ctnet command that switched a thread into a
// container's namespace for a moment to configure it (its main thread may be the
// one), not one of the container's processes. Killing it when the container ends
// would kill, say, the rm removing that container.
func visiting(pid int, ino uint64) bool {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return false
	}
	for _, task := range tasks {
		if n := NetNSInode("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/ns/net"); n != 0 && n != ino {
			return true
		}
	}
	return false
}

// Running reports whether pid is a running process: it exists and is not a zombie.
func Running(pid int) bool {
	_, err := startTime(pid)
	return err == nil
}

// Find walks /proc and returns the running processes for which match is true.
// Zombies are left out, whatever match says: a zombie has already released its
// namespaces and memory, cannot be signalled, and its parent reaps it, so no
// caller (killing what is left in a namespace, waiting for one to empty, counting
// a binary's processes) has anything to do with one. match runs first; a process
// that exits meanwhile reads as gone.
func Find(match func(pid int) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !match(pid) {
			continue
		}
		if Running(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// OfExecutable lists the running processes whose executable is the file at path.
func OfExecutable(path string) []int {
	return Find(func(pid int) bool {
		exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		return err == nil && exe == path
	})
}
