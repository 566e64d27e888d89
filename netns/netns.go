// Package netns creates, opens and removes network namespaces and gives each one a
// netlink handle and an nftables connection bound to it at the socket.
//
// It is the only package that locks an OS thread and switches it into another
// namespace (Do, and OnThread for the sandbox's and the tests' other namespaces), so
// the rules for doing that safely live in one place: the switching goroutine is fresh,
// its thread is locked for the whole switch, and a thread that cannot be switched back
// stays locked so the Go runtime discards it instead of reusing it in a foreign
// namespace.
package netns

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/google/nftables"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// NS is an open network namespace. Its handles are created on first use and closed
// by Close.
type NS struct {
	path string
	file *os.File

	mu    sync.Mutex
	link  *netlink.Handle
	route *nl.SocketHandle
	nft   *nftables.Conn
	// nftSocket is nft's socket, for NFTSocket.
	nftSocket *mdnetlink.Conn

	journal *Journal // changes go through it; nil: made directly
	// sysctlDirs are directories of /proc/sys as the namespace sees them, by path
	// (see sysctlDir).
	sysctlDirs map[string]*os.File
}

// Open opens the namespace at path (a bind mount, /proc/PID/ns/net, /run/netns/NAME).
func Open(path string) (*NS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	if err := checkNetNS(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	return &NS{path: path, file: f}, nil
}

// Current opens the namespace of the calling thread. Outside Do that is the process's
// own namespace, because no other code in ctnet moves threads.
func Current() (*NS, error) {
	return Open("/proc/thread-self/ns/net")
}

var errNotNetNS = errors.New("not a network namespace")

func checkNetNS(f *os.File) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return err
	}
	// nsfs for bind mounts and /proc/PID/ns files; proc for the magic links that are
	// not yet resolved on some kernels.
	if st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
		return errNotNetNS
	}
	nstype, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err == nil && nstype != unix.CLONE_NEWNET {
		return errNotNetNS
	}
	return nil
}

// SystemPinDir is where iproute2 pins the namespaces of ip netns add.
const SystemPinDir = "/run/netns"

// New creates a namespace and pins it with a bind mount at path, whose parent
// directory must exist. The directory becomes a mount point of its own while it
// holds pins, as ip netns makes /run/netns one: a mount namespace copied from this
// one (a container's) can then drop all the pins it copied with one unmount of the
// directory instead of one per pin. On error nothing is left behind.
func New(path string) (*NS, error) {
	dir := filepath.Dir(path)
	if err := makePinDir(dir); err != nil {
		return nil, fmt.Errorf("create network namespace %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		ReleasePinDir(dir)
		return nil, fmt.Errorf("create network namespace %s: %w", path, err)
	}
	f.Close()
	err = OnThread(func(t *Thread) error {
		if err := t.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		return unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
	})
	if err != nil {
		os.Remove(path)
		ReleasePinDir(dir)
		return nil, fmt.Errorf("create network namespace %s: %w", path, err)
	}
	ns, err := Open(path)
	if err != nil {
		Remove(path)
		return nil, err
	}
	return ns, nil
}

// Remove unmounts and deletes a namespace pinned by New. A path that is already gone
// or no longer mounted is not an error, so teardown can be repeated.
func Remove(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network namespace %s: %w", path, err)
	}
	_, err = ReleasePinDir(filepath.Dir(path))
	return err
}

// makePinDir makes dir a private mount point, unless it is one. Private: a pin made
// later need not be copied into every container's mount namespace. A directory that
// already holds pins (an older ctnet's) stays as it is until it empties: a mount
// over it would hide them.
func makePinDir(dir string) error {
	if mounted, err := isMountPoint(dir); err != nil || mounted {
		return err
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
		return err
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("make %s a mount point: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		return fmt.Errorf("make %s a private mount: %w", dir, err)
	}
	return nil
}

// ReleasePinDir unmounts dir once it holds no pins, so nothing of ctnet stays
// mounted without a namespace in it, and reports whether it did.
func ReleasePinDir(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) > 0 {
		return false, nil // gone already, or still in use
	}
	if mounted, err := isMountPoint(dir); err != nil || !mounted {
		return false, err
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return false, fmt.Errorf("unmount %s: %w", dir, err)
	}
	return true, nil
}

// isMountPoint reports whether dir is the root of a mount: its mount differs from
// its parent's.
func isMountPoint(dir string) (bool, error) {
	var self, parent unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &self); err != nil {
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	if err := unix.Statx(unix.AT_FDCWD, filepath.Join(dir, ".."), 0, unix.STATX_MNT_ID, &parent); err != nil {
		return false, fmt.Errorf("stat %s: %w", filepath.Dir(dir), err)
	}
	return self.Mnt_id != parent.Mnt_id, nil
}

// IsMounted reports whether path is a pinned namespace (a bind mount of nsfs).
func IsMounted(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// Path is the path the namespace was opened from.
func (n *NS) Path() string { return n.path }

// Fd is a descriptor referring to the namespace, valid until Close; -1 for a
// namespace a dry run only pretends to make.
func (n *NS) Fd() int {
	if n.file == nil {
		return -1
	}
	return int(n.file.Fd())
}

// ID identifies the namespace itself (its nsfs inode), whichever path opened it.
func (n *NS) ID() (uint64, error) {
	if n.file == nil {
		return 0, fmt.Errorf("stat network namespace %s: %w", n.path, ErrDryRun)
	}
	var st unix.Stat_t
	if err := unix.Fstat(n.Fd(), &st); err != nil {
		return 0, fmt.Errorf("stat network namespace %s: %w", n.path, err)
	}
	return st.Ino, nil
}

// Same reports whether a and b are the same namespace.
func Same(a, b *NS) bool {
	ia, err1 := a.ID()
	ib, err2 := b.ID()
	return err1 == nil && err2 == nil && ia == ib
}

// Do runs fn on a fresh, locked OS thread that has entered the namespace. fn must
// not start goroutines that depend on the namespace: they run elsewhere. For the
// process's own namespace it runs fn directly: no switch is needed, and an
// unprivileged process could not make it.
func (n *NS) Do(fn func() error) error {
	if n.file == nil {
		return fmt.Errorf("%s: %w", n.path, ErrDryRun)
	}
	if n.isProcessNS() {
		return fn()
	}
	return OnThread(func(t *Thread) error {
		if err := t.enter(n.Fd(), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", n.path, err)
		}
		return fn()
	})
}

// processNS is the namespace the process started in; outside Do every thread is in it.
// It is read on first use, not at start (a /proc lookup every command paid), and
// from a fresh goroutine, since the caller's may be one OnThread moved elsewhere:
// any other runs on a thread no OnThread function holds, which is in the
// process's namespace. (/proc/self would name the main thread's, which the
// runtime may lend to an OnThread function.)
var processNS = sync.OnceValue(readProcessNS)

func readProcessNS() uint64 {
	ino := make(chan uint64)
	go func() {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			ino <- 0
			return
		}
		ino <- st.Ino
	}()
	return <-ino
}

func (n *NS) isProcessNS() bool {
	id, err := n.ID()
	return err == nil && id != 0 && id == processNS()
}

// Thread is the locked OS thread OnThread lends to a function, which moves it
// between namespaces only through its methods, so that OnThread knows how to put
// it back.
type Thread struct {
	left    []leftNS // the namespaces the thread left, first left first
	discard bool
}

type leftNS struct {
	f    *os.File
	kind int
}

// returnableNS names the namespace kinds a Thread can leave and return to, as
// /proc/thread-self/ns names them, "" for others. A mount namespace cannot be
// returned to (setns refuses it in a multithreaded process), so a thread that
// leaves it is discarded. (A switch, not a map: every command would build the map
// at start.)
func returnableNS(kind int) string {
	switch kind {
	case unix.CLONE_NEWNET:
		return "net"
	case unix.CLONE_NEWUTS:
		return "uts"
	}
	return ""
}

// OnThread runs fn on a new goroutine whose OS thread is locked for fn's whole run.
// Afterwards the thread goes back into every namespace it left and is unlocked;
// if it cannot go back, or it left its mount namespace, it stays locked and the Go
// runtime ends it with the goroutine instead of reusing a thread that lives in
// another namespace. (Discarding alone would not do for the main thread, which the
// runtime keeps: then the whole process would read as being in that namespace.
// Hence a fresh goroutine, never the caller's.)
func OnThread(fn func(t *Thread) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		t := &Thread{}
		err := fn(t)
		if rerr := t.goBack(); rerr != nil {
			errc <- errors.Join(err, rerr)
			return
		}
		if !t.discard {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Enter moves the thread into the namespace at path, of kind unix.CLONE_NEWNET or
// unix.CLONE_NEWUTS.
func (t *Thread) Enter(path string, kind int) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", path, err)
	}
	defer f.Close()
	if err := t.enter(int(f.Fd()), kind); err != nil {
		return fmt.Errorf("enter namespace %s: %w", path, err)
	}
	return nil
}

func (t *Thread) enter(fd, kind int) error {
	if err := t.leave(kind); err != nil {
		return err
	}
	return unix.Setns(fd, kind)
}

// Unshare gives the thread a new namespace of kind: unix.CLONE_NEWNET,
// unix.CLONE_NEWUTS, or unix.CLONE_NEWNS, after which the thread is discarded.
func (t *Thread) Unshare(kind int) error {
	if kind == unix.CLONE_NEWNS {
		// From here on the thread has a root and working directory of its own too.
		t.discard = true
	} else if err := t.leave(kind); err != nil {
		return err
	}
	if err := unix.Unshare(kind); err != nil {
		return fmt.Errorf("unshare %s namespace: %w", nsName(kind), err)
	}
	return nil
}

// leave remembers the thread's namespace of kind, unless it left one of that kind
// already: going back means going back to the first.
func (t *Thread) leave(kind int) error {
	name := returnableNS(kind)
	if name == "" {
		return fmt.Errorf("cannot leave and return to namespace kind %#x", kind)
	}
	for _, l := range t.left {
		if l.kind == kind {
			return nil
		}
	}
	f, err := os.Open("/proc/thread-self/ns/" + name)
	if err != nil {
		return fmt.Errorf("open the thread's %s namespace: %w", name, err)
	}
	t.left = append(t.left, leftNS{f, kind})
	return nil
}

// goBack puts the thread back into the namespaces it left; if one fails, the
// thread is discarded.
func (t *Thread) goBack() error {
	var errs []error
	for _, l := range t.left {
		if err := unix.Setns(int(l.f.Fd()), l.kind); err != nil {
			t.discard = true
			errs = append(errs, fmt.Errorf("restore thread %s namespace: %w", nsName(l.kind), err))
		}
		l.f.Close()
	}
	t.left = nil
	return errors.Join(errs...)
}

func nsName(kind int) string {
	if kind == unix.CLONE_NEWNS {
		return "mount"
	}
	return returnableNS(kind)
}

// Netlink returns the namespace's rtnetlink handle, created inside it on first use.
func (n *NS) Netlink() (*netlink.Handle, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.link != nil {
		return n.link, nil
	}
	var h *netlink.Handle
	err := n.Do(func() (err error) {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", n.path, err)
	}
	n.link = h
	return h, nil
}

// RouteSocket returns a raw rtnetlink socket in the namespace, for requests the
// netlink library cannot express in one message.
func (n *NS) RouteSocket() (*nl.SocketHandle, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.route != nil {
		return n.route, nil
	}
	var s *nl.NetlinkSocket
	err := n.Do(func() (err error) {
		s, err = nl.Subscribe(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", n.path, err)
	}
	n.route = &nl.SocketHandle{Socket: s}
	return n.route, nil
}

// NFTSocket returns a duplicate of the descriptor of NFT's socket, or nil if NFT
// has not been called. Whoever closes a socket's last descriptor after it committed
// a change that deleted anything waits in the kernel until nf_tables has freed
// what the change deleted, one RCU grace period later (3–15 ms here; the commit
// itself does not wait): a command hands a duplicate to a process that outlives
// it (package internal/linkreaper), so that its own exit does not wait.
func (n *NS) NFTSocket() (*os.File, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nftSocket == nil {
		return nil, nil
	}
	raw, err := n.nftSocket.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, dupErr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if err := dupErr; err != nil {
		return nil, fmt.Errorf("duplicate the nftables socket of %s: %w", n.path, err)
	}
	return os.NewFile(uintptr(dup), "nftables socket"), nil
}

// NFT returns a lasting nftables connection whose socket lives in the namespace.
func (n *NS) NFT() (*nftables.Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nft != nil {
		return n.nft, nil
	}
	if n.file == nil {
		return nil, fmt.Errorf("open nftables in %s: %w", n.path, ErrDryRun)
	}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *mdnetlink.Conn) error {
		n.nftSocket = c
		return nil
	})}
	if !n.isProcessNS() {
		// Without the option the socket is made on the calling thread, which outside
		// Do is in the process's own namespace: no thread switch needed.
		opts = append(opts, nftables.WithNetNSFd(n.Fd()))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables in %s: %w", n.path, err)
	}
	n.nft = c
	return c, nil
}

// WriteSysctl writes value to /proc/sys/<key> as seen from inside the namespace
// (key like "net/ipv4/ip_forward"). A value already in place is not rewritten.
func (n *NS) WriteSysctl(key, value string) error {
	return n.Change(Change{Argv: []string{"sysctl", "-qw", key + "=" + value}}, func() error {
		return n.Do(func() error { return n.writeSysctl(key, value) })
	})
}

// ReadSysctl reads /proc/sys/<key> inside the namespace.
func (n *NS) ReadSysctl(key string) (string, error) {
	var v string
	err := n.Do(func() error {
		f, err := n.openSysctl(key, os.O_RDONLY)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		v = string(trimNewline(b))
		return err
	})
	return v, err
}

func (n *NS) writeSysctl(key, value string) error {
	f, err := n.openSysctl(key, os.O_RDWR)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) {
		// A setting this process may not change can still be as asked already.
		if ro, rerr := n.openSysctl(key, os.O_RDONLY); rerr == nil {
			cur, _ := io.ReadAll(ro)
			ro.Close()
			if string(trimNewline(cur)) == value {
				return nil
			}
		}
	}
	if err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", key, value, err)
	}
	defer f.Close()
	buf := make([]byte, 64)
	if k, err := f.Read(buf); err == nil && string(trimNewline(buf[:k])) == value {
		return nil
	}
	if _, err := f.WriteAt([]byte(value), 0); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// openSysctl opens /proc/sys/<key> on a thread inside the namespace, relative to
// the directory of its first two components (sysctlDir).
func (n *NS) openSysctl(key string, flag int) (*os.File, error) {
	path := filepath.Join("/proc/sys", key)
	parts := strings.SplitN(key, "/", 3)
	if len(parts) < 3 {
		return os.OpenFile(path, flag, 0)
	}
	dir, err := n.sysctlDir(parts[0] + "/" + parts[1])
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(int(dir.Fd()), parts[2], flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// sysctlDir returns /proc/sys/<dir> as the namespace sees it, opened on first use
// from a thread inside it. The kernel keeps such a directory (net/ipv6, net/ipv4)
// apart for every network namespace under one shared parent, and finds the calling
// thread's by comparing it with every other live namespace's in turn: with a
// thousand containers a path through it took 0.1 ms, more than the write itself.
// Later paths opened relative to the directory skip that search.
func (n *NS) sysctlDir(dir string) (*os.File, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if f, ok := n.sysctlDirs[dir]; ok {
		return f, nil
	}
	path := filepath.Join("/proc/sys", dir)
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if n.sysctlDirs == nil {
		n.sysctlDirs = map[string]*os.File{}
	}
	n.sysctlDirs[dir] = os.NewFile(uintptr(fd), path)
	return n.sysctlDirs[dir], nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// Close closes the namespace's handles and descriptor. The namespace itself lives on
// while anything else holds it.
func (n *NS) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closeHandles()
	if n.file == nil {
		return nil
	}
	return n.file.Close()
}

// CloseHandles closes the handles made on first use (netlink, nftables, /proc/sys
// directories); the next use makes them again, and the namespace stays open.
func (n *NS) CloseHandles() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closeHandles()
}

func (n *NS) closeHandles() {
	if n.link != nil {
		n.link.Close()
		n.link = nil
	}
	if n.route != nil {
		n.route.Close()
		n.route = nil
	}
	if n.nft != nil {
		n.nft.CloseLasting()
		n.nft, n.nftSocket = nil, nil
	}
	for dir, f := range n.sysctlDirs {
		f.Close()
		delete(n.sysctlDirs, dir)
	}
}
