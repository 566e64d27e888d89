// Package usernetproc runs a rootless container's user-mode network in a process of
// its own, the ctnet-usernet helper, so that the gVisor stack is linked into that
// helper alone and not into every ctnet command.
//
// The helper gets the TAP device's host end as descriptor 3 and, as descriptor 4,
// one end of a socket pair over which it asks for the sockets born inside the
// container's namespace that published ports need (Inner). Its configuration comes
// as one JSON line on stdin, and stdin stays open for as long as the network is to
// live: its end (Close, or the death of the process that started it) stops the
// helper. It answers "ok" on stdout once its ports are published, or "error: " and
// why, and writes its diagnostics to stderr as JSON log records, which Start gives
// to the caller's logger.
package usernetproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/published"
)

// HelperName is the helper's file name, found beside the ctnet executable.
const HelperName = "ctnet-usernet"

// The helper's descriptors beyond stdio.
const (
	TAPFD   = 3
	InnerFD = 4
)

// Port is a published port, as usernet serves it.
type Port = published.Port

// Config is what the helper serves, its first line on stdin.
type Config struct {
	MTU               uint32           `json:"mtu"`
	Subnet            netip.Prefix     `json:"subnet"`
	AllowHostLoopback bool             `json:"allow_host_loopback"`
	Resolvers         []netip.AddrPort `json:"resolvers,omitempty"`
	Ports             []published.Port `json:"ports,omitempty"`
	// LogLevel is the least level of the caller's logger: the helper does not
	// write what would be dropped.
	LogLevel slog.Level `json:"log_level"`
}

// Helper is the path of the helper beside the running executable, which this
// process may execute.
func Helper() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find %s: %w", HelperName, err)
	}
	path := filepath.Join(filepath.Dir(self), HelperName)
	if err := unix.Access(path, unix.X_OK); err != nil {
		return "", fmt.Errorf("the user-mode network needs %s beside %s (build it with ./cmd/%s): %s: %w", HelperName, self, HelperName, path, err)
	}
	return path, nil
}

// Network is a running helper.
type Network struct {
	cmd     *exec.Cmd
	stdin   *os.File
	inner   *os.File
	serving sync.WaitGroup // the log and inner socket relays
	once    sync.Once
	err     error
}

// Start runs helper on tap, which it takes, serving cfg; newInner makes the inner
// sockets the helper asks for, and logger gets its diagnostics. It returns once the
// helper serves cfg's ports.
func Start(helper string, tap *os.File, cfg Config, newInner func(proto string) (*os.File, error), logger *slog.Logger) (*Network, error) {
	defer tap.Close()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.LogLevel = leastLevel(logger)
	line, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket pair for %s: %w", HelperName, err)
	}
	inner, innerChild := os.NewFile(uintptr(pair[0]), "inner"), os.NewFile(uintptr(pair[1]), "inner")
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		inner.Close()
		innerChild.Close()
		return nil, err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		closeAll(inner, innerChild, stdinR, stdinW)
		return nil, err
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		closeAll(inner, innerChild, stdinR, stdinW, stdoutR, stdoutW)
		return nil, err
	}
	cmd := exec.Command(helper)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	cmd.ExtraFiles = []*os.File{tap, innerChild} // TAPFD, InnerFD
	// A process group of its own: the terminal's ^C and hang-up go to the command
	// (ctnet forwards them), and the network lives until the command has ended.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	closeAll(stdinR, stdoutW, stderrW, innerChild)
	if err != nil {
		closeAll(inner, stdinW, stdoutR, stderrR)
		return nil, fmt.Errorf("start %s: %w", HelperName, err)
	}
	n := &Network{cmd: cmd, stdin: stdinW, inner: inner}
	n.serving.Add(2)
	go func() {
		defer n.serving.Done()
		relayLog(stderrR, logger)
	}()
	go func() {
		defer n.serving.Done()
		serveInner(inner, newInner)
	}()
	_, err = stdinW.Write(append(line, '\n'))
	answer, rerr := bufio.NewReader(stdoutR).ReadString('\n')
	stdoutR.Close()
	if err == nil && answer == "ok\n" {
		return n, nil
	}
	werr := n.Close()
	switch {
	case strings.HasPrefix(answer, "error: "):
		return nil, errors.New(strings.TrimSpace(strings.TrimPrefix(answer, "error: ")))
	case err != nil:
		return nil, fmt.Errorf("configure %s: %w", HelperName, err)
	case werr != nil:
		return nil, fmt.Errorf("%s: %w", HelperName, werr)
	}
	return nil, fmt.Errorf("%s ended without an answer: %v", HelperName, rerr)
}

// Close stops the helper, which closes the network, and waits for it.
func (n *Network) Close() error {
	n.once.Do(func() {
		n.stdin.Close()
		n.err = n.cmd.Wait()
		// The helper's ends of stderr and the socket pair went with it, which
		// ends both relays.
		n.serving.Wait()
		n.inner.Close()
	})
	return n.err
}

// leastLevel is the least level logger takes.
func leastLevel(logger *slog.Logger) slog.Level {
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if logger.Enabled(context.Background(), l) {
			return l
		}
	}
	return slog.LevelError + 1
}

// relayLog gives the helper's JSON records to logger, and any other line (a
// panic's) as an error, until the helper exits.
func relayLog(r *os.File, logger *slog.Logger) {
	defer r.Close()
	lines := bufio.NewScanner(r)
	lines.Buffer(nil, 1<<20)
	for lines.Scan() {
		var record map[string]any
		if err := json.Unmarshal(lines.Bytes(), &record); err != nil {
			logger.Error(HelperName, "output", lines.Text())
			continue
		}
		var level slog.Level
		if s, ok := record[slog.LevelKey].(string); !ok || level.UnmarshalText([]byte(s)) != nil {
			level = slog.LevelError
		}
		msg, _ := record[slog.MessageKey].(string)
		delete(record, slog.TimeKey)
		delete(record, slog.LevelKey)
		delete(record, slog.MessageKey)
		keys := make([]string, 0, len(record))
		for k := range record {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		attrs := make([]any, 0, len(keys))
		for _, k := range keys {
			attrs = append(attrs, slog.Any(k, record[k]))
		}
		logger.Log(context.Background(), level, msg, attrs...)
	}
}

// The first byte of an answer to a request for an inner socket: the socket comes
// with it, or the error's text follows.
const (
	innerGiven  = '+'
	innerFailed = '-'
)

// serveInner answers the helper's requests for inner sockets: a request is the
// protocol's name, the answer innerGiven with a socket's descriptor, or innerFailed
// and an error's text.
func serveInner(conn *os.File, newInner func(proto string) (*os.File, error)) {
	buf := make([]byte, 64)
	for {
		n, _, _, _, err := unix.Recvmsg(int(conn.Fd()), buf, nil, 0)
		if err != nil || n == 0 {
			return
		}
		f, err := newInner(string(buf[:n]))
		if err != nil {
			if unix.Sendmsg(int(conn.Fd()), append([]byte{innerFailed}, err.Error()...), nil, nil, 0) != nil {
				return
			}
			continue
		}
		err = unix.Sendmsg(int(conn.Fd()), []byte{innerGiven}, unix.UnixRights(int(f.Fd())), nil, 0)
		f.Close()
		if err != nil {
			return
		}
	}
}

// Inner is the helper's side of the inner sockets: New asks the process that
// started it for one, one request at a time.
type Inner struct {
	mu   sync.Mutex
	conn *os.File
}

// NewInner is the helper's inner socket connection, descriptor InnerFD.
func NewInner() *Inner { return &Inner{conn: os.NewFile(InnerFD, "inner")} }

// New is a socket of proto ("tcp" or "udp") born inside the container's namespace.
func (in *Inner) New(proto string) (*os.File, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := unix.Sendmsg(int(in.conn.Fd()), []byte(proto), nil, nil, 0); err != nil {
		return nil, fmt.Errorf("ask for an inner socket: %w", err)
	}
	buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(in.conn.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("receive an inner socket: %w", err)
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
		fds, _ = unix.ParseUnixRights(&msgs[0])
	}
	switch {
	case n == 1 && buf[0] == innerGiven && len(fds) == 1:
		return os.NewFile(uintptr(fds[0]), "inner "+proto), nil
	case n > 0 && buf[0] == innerFailed:
		closeFDs(fds)
		return nil, errors.New(string(buf[1:n]))
	}
	closeFDs(fds)
	return nil, errors.New("receive an inner socket: no descriptor in the answer")
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		f.Close()
	}
}
