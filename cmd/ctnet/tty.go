package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ttyDrain is how long, once the command has ended, its terminal's last output is
// waited for: a process it left behind may hold the terminal open for ever.
const ttyDrain = time.Second

// terminal is the pty -t gives the command: the command has its slave end as
// stdin, stdout and stderr; ctnet copies the master end to its own stdout and,
// with -i, its own stdin to the master.
type terminal struct {
	master, slave *os.File
	restore       func()
	stopResize    func()
	output        chan struct{} // closed once the output is copied
}

// errNotATerminal is Docker's refusal of -i -t when stdin is not a terminal.
var errNotATerminal = errors.New("the input device is not a TTY")

func openTerminal(in, out *os.File, interactive bool) (*terminal, error) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open a terminal for -t: %w", err)
	}
	var n int
	err = control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return err
		}
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("open a terminal for -t: %w", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("open a terminal for -t: %w", err)
	}
	t := &terminal{master: master, slave: slave, restore: func() {}, stopResize: func() {}, output: make(chan struct{})}
	if isTerminal(in) {
		t.followSize(in)
		if interactive {
			if t.restore, err = makeRaw(in); err != nil {
				t.stopResize()
				master.Close()
				slave.Close()
				return nil, err
			}
		}
	}
	go func() {
		defer close(t.output)
		io.Copy(out, master) // ends with EIO once no process holds the slave end
	}()
	if interactive {
		go io.Copy(master, in) // ends when ctnet does
	}
	return t, nil
}

// close ends the terminal once the command has ended, with what it wrote last; a
// nil terminal (no -t) has nothing to end.
func (t *terminal) close() {
	if t == nil {
		return
	}
	t.slave.Close()
	t.master.SetReadDeadline(time.Now().Add(ttyDrain))
	<-t.output
	t.master.Close()
	t.stopResize()
	t.restore()
}

// followSize gives the pty the size of ctnet's terminal, now and whenever it
// changes.
func (t *terminal) followSize(in *os.File) {
	resize := func() {
		if ws, err := unix.IoctlGetWinsize(int(in.Fd()), unix.TIOCGWINSZ); err == nil {
			control(t.master, func(fd int) error { return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws) })
		}
	}
	resize()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-winch:
				resize()
			case <-done:
				return
			}
		}
	}()
	t.stopResize = func() { signal.Stop(winch); close(done) }
}

// makeRaw puts the terminal in raw mode, as cfmakeraw does, so that keys (^C
// too) reach the command's terminal unchanged; it returns what puts it back.
func makeRaw(f *os.File) (func(), error) {
	fd := int(f.Fd())
	saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("put the terminal in raw mode: %w", err)
	}
	raw := *saved
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("put the terminal in raw mode: %w", err)
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, saved) }, nil
}

// control runs fn on f's descriptor without taking f out of the poller (as Fd
// would), so that f's deadlines keep working.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
