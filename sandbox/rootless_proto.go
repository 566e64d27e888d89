package sandbox

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// The rootless parent and its in-namespace helper talk over SOCK_SEQPACKET
// unix sockets: one JSON message per packet, descriptors alongside as
// SCM_RIGHTS. Seqpacket keeps message boundaries and reports the peer's
// death as EOF, which is how each side notices the other is gone.

// Message operations.
const (
	opConfig  = "config"  // parent → helper: rootlessChildConfig
	opReady   = "ready"   // helper → parent: namespaces set up (+ TAP fd)
	opStart   = "start"   // parent → helper: run CMD
	opStarted = "started" // helper → parent: CMD's host PID; → exec client: PID
	opExited  = "exited"  // helper → parent / exec client: Code
	opSocket  = "socket"  // parent → helper: Proto (tcp, udp, tcp6, udp6); reply carries the fd
	opExec    = "exec"    // exec client → helper: Argv, Env (+ stdio fds)
	opError   = "error"   // any reply: Err, ErrKind
)

// Error kinds carried across the process boundary so that the parent can
// wrap the right sentinel.
const (
	errKindTUN    = "tun"
	errKindUserNS = "userns"
)

type rootlessMessage struct {
	Op      string               `json:"op"`
	Config  *rootlessChildConfig `json:"config,omitempty"`
	Proto   string               `json:"proto,omitempty"`
	PID     int                  `json:"pid,omitempty"`
	Code    int                  `json:"code,omitempty"`
	Argv    []string             `json:"argv,omitempty"`
	Env     []string             `json:"env,omitempty"`
	Err     string               `json:"err,omitempty"`
	ErrKind string               `json:"errKind,omitempty"`
}

// rootlessChildConfig is what the helper needs to set up the namespaces and
// run CMD.
type rootlessChildConfig struct {
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	Dir      string   `json:"dir,omitempty"`
	Hostname string   `json:"hostname,omitempty"`
	// UserNet gives the container tap0 with the address Guest and the
	// default route via Gateway; otherwise it has only its loopback.
	UserNet bool         `json:"usernet,omitempty"`
	MTU     uint32       `json:"mtu,omitempty"`
	Guest   netip.Prefix `json:"guest"`
	Gateway netip.Addr   `json:"gateway"`
	// Guest6 and Gateway6 are tap0's IPv6 address and default route, if valid.
	Guest6   netip.Prefix `json:"guest6,omitzero"`
	Gateway6 netip.Addr   `json:"gateway6,omitzero"`
	Ports    []GuestPort  `json:"ports,omitempty"`
	Files    []BindFile   `json:"files,omitempty"`
}

// maxRootlessMessage bounds one message: argv and env of a command.
const maxRootlessMessage = 1 << 20

func sendRootless(c *net.UnixConn, m rootlessMessage, files ...*os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s message: %w", m.Op, err)
	}
	var oob []byte
	if len(files) > 0 {
		// Duplicates, because (*os.File).Fd would switch the caller's
		// files to blocking mode.
		fds := make([]int, 0, len(files))
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
		for _, f := range files {
			fd, err := dupFile(f)
			if err != nil {
				return fmt.Errorf("send %s message: %w", m.Op, err)
			}
			fds = append(fds, fd)
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("send %s message: %w", m.Op, err)
	}
	return nil
}

func dupFile(f *os.File) (int, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(old uintptr) { fd, dupErr = unix.FcntlInt(old, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, dupErr
}

// recvRootless returns the next message and the descriptors that came with
// it (the caller owns them); io.EOF when the peer is gone.
func recvRootless(c *net.UnixConn) (rootlessMessage, []*os.File, error) {
	buf := make([]byte, maxRootlessMessage)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return rootlessMessage{}, nil, fmt.Errorf("receive message: %w", err)
	}
	files, err := parseRights(oob[:oobn])
	if err != nil {
		return rootlessMessage{}, nil, err
	}
	if n == 0 {
		closeFiles(files)
		return rootlessMessage{}, nil, io.EOF
	}
	var m rootlessMessage
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		closeFiles(files)
		return rootlessMessage{}, nil, fmt.Errorf("decode message: %w", err)
	}
	return m, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var files []*os.File
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "received"))
		}
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// seqpacketPair returns a connected pair: this side as a *net.UnixConn and
// the other as an *os.File to hand to a child process.
func seqpacketPair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create socket pair: %w", err)
	}
	local := os.NewFile(uintptr(fds[0]), "control")
	defer local.Close()
	c, err := net.FileConn(local)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("create socket pair: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "control"), nil
}

// unixConnFromFD adopts an inherited seqpacket descriptor.
func unixConnFromFD(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "control")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("adopt control socket %d: %w", fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("adopt control socket %d: unexpected %T", fd, c)
	}
	return uc, nil
}
