// Package linkreaper deletes the links a command retired (link.RetiredGroup) in a
// process of its own, so that the command can exit before the kernel has finished:
// a process is reaped only once all its threads have left the kernel, and one stuck
// in a link's deletion waits there for RCU grace periods (about 20 ms). The process
// is the program's own executable, started with Arg: its main calls Main.
//
// One such process per host namespace at a time is enough, since each deletes every
// retired link there: it holds an abstract unix socket name, which lives in the
// namespace and dies with the process, and a command that finds the name taken
// starts none. The holder releases the name before its last look for retired links,
// so a link retired before a command found the name taken is always seen.
//
// The process also takes the command's other wait on the kernel: the command's
// nftables socket (netns.NS.NFTSocket), whose release after a commit that deleted
// anything waits for an RCU grace period. The command sends it over the lock
// socket, to the process it starts or the one running, and nobody receives it: it
// stays in flight, queued on the lock, until the process releases the name. The
// command's own close is then not the socket's last, and the process's is.
package linkreaper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
)

// Arg is the first argument of the deleting process.
const Arg = "__ctnet_delete_retired"

// The deleting process gets the host namespace on descriptor 3 and the bound lock
// socket on 4.
const (
	hostFD = 3
	lockFD = 4
)

// lockName is the abstract socket name (leading NUL) the deleting process of a
// namespace holds.
const lockName = "\x00ctnet-delete-retired"

// Start has the links retired in host deleted without waiting: if no process is
// deleting them already, it starts the program again with Arg and does not wait for
// it. That process runs in a session of its own, so that a terminal's signal to the
// command's process group does not stop it; were it stopped anyway, ctnet gc
// deletes what it left.
func Start(host *netns.NS) error {
	nftSocket, err := host.NFTSocket()
	if err != nil {
		return err
	}
	if nftSocket != nil {
		defer nftSocket.Close()
	}
	lock, err := takeLock(host)
	if errors.Is(err, unix.EADDRINUSE) {
		// The holder looks again after releasing it, if it is a deleting process:
		// any user of the namespace can bind an abstract name.
		return handToHolder(host, nftSocket)
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := handToHolder(host, nftSocket); err != nil {
		return err
	}
	fd, err := unix.Dup(host.Fd())
	if err != nil {
		return fmt.Errorf("pass the host namespace on: %w", err)
	}
	ns := os.NewFile(uintptr(fd), "host network namespace")
	defer ns.Close()
	cmd := exec.Command("/proc/self/exe", Arg)
	cmd.ExtraFiles = []*os.File{ns, lock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the deletion of retired links: %w", err)
	}
	// A long-lived caller (a supervisor) collects it; a command exits before it and
	// leaves it to init.
	go cmd.Wait()
	return nil
}

// takeLock binds the namespace's lock name to a new socket made in it.
func takeLock(host *netns.NS) (*os.File, error) {
	var fd int
	err := host.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("make the lock of retired links' deletion: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: lockName}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Listening lets handToHolder ask who holds it; nobody accepts.
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "lock of retired links' deletion"), nil
}

// handToHolder returns nil if the lock's holder runs as this process's user, as a
// deleting process (or this one, about to start it) does, after sending it
// nftSocket when there is one; otherwise an error, on which the caller deletes the
// links itself. A holder whose backlog is full has callers connecting: ctnet's.
// The socket stays the caller's when it cannot be sent: that costs only the wait.
func handToHolder(host *netns.NS, nftSocket *os.File) error {
	var cred *unix.Ucred
	err := host.Do(func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: lockName})
		if errors.Is(err, unix.EAGAIN) {
			return nil
		}
		if err != nil {
			return err
		}
		cred, err = unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil || int(cred.Uid) != os.Geteuid() || nftSocket == nil {
			return err
		}
		// Nobody accepts: the message waits in the connection the holder's
		// backlog keeps until it releases the name, and the socket with it.
		// (Fd would make the socket, shared with the nftables connection, blocking.)
		raw, err := nftSocket.SyscallConn()
		if err != nil {
			return nil
		}
		raw.Control(func(nft uintptr) { unix.Sendmsg(fd, []byte{0}, unix.UnixRights(int(nft)), nil, 0) })
		return nil
	})
	switch {
	case err != nil:
		return fmt.Errorf("ask who holds the lock of retired links' deletion: %w", err)
	case cred != nil && int(cred.Uid) != os.Geteuid():
		return fmt.Errorf("the lock of retired links' deletion is held by uid %d, not a deleting process of ctnet's", cred.Uid)
	}
	return nil
}

// Main deletes the retired links of the namespace Start passed on, until there are
// none, releases the lock, and deletes once more what was retired meanwhile. It
// reports an error on standard error (which Start leaves at /dev/null) and in the
// exit status.
func Main() int {
	ns, err := netns.Open(fmt.Sprintf("/proc/self/fd/%d", hostFD))
	if err == nil {
		err = deleteAll(ns)
		ns.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ctnet:", err)
		return 1
	}
	return 0
}

func deleteAll(ns *netns.NS) error {
	for {
		deleted, err := link.DeleteRetired(ns)
		if err != nil {
			return err
		}
		if !deleted {
			break
		}
	}
	if err := unix.Close(lockFD); err != nil {
		return fmt.Errorf("release the lock of retired links' deletion: %w", err)
	}
	_, err := link.DeleteRetired(ns)
	return err
}
