// Package network is ctnet's orchestrator: networks, containers and their
// attachments, published ports, garbage collection and restore. It is the public Go
// API under the CLI; a runtime or a test harness can use it the same way.
//
// Every change follows one pattern (mutate): take the root's exclusive lock, open the
// store, validate everything, record the new state in the store transaction, make the
// kernel follow with an undo pushed for every step, and commit the store last. If
// anything fails the undo runs in reverse and the transaction is rolled back, so the
// store and the kernel agree afterwards.
package network

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/fastpath"
	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/internal/fault"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/ipam"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
)

// Sentinel errors callers branch on (errors.Is).
var (
	ErrNotFound      = store.ErrNotFound
	ErrConflict      = store.ErrConflict
	ErrPortInUse     = errors.New("port in use")
	ErrPoolExhausted = ipam.ErrPoolExhausted
	ErrInvalid       = errors.New("invalid argument")
)

// Options says where a Manager keeps its state and which namespace is the host.
type Options struct {
	// Root, when set, holds everything: state, lock, namespace mounts, runtime files.
	Root string
	// StateDir and RunDir are used when Root is empty (defaults /var/lib/ctnet and
	// /run/ctnet).
	StateDir, RunDir string
	// HostNetNS is the path of the namespace that plays the host; empty means the
	// namespace of the calling thread when New runs.
	HostNetNS string
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Pools are the address pools subnets are picked from; nil means ipam.DefaultPools.
	Pools []ipam.Pool
	// Pool6 is where networks' IPv6 subnets are picked from; the zero Pool means
	// ipam.DefaultPool6.
	Pool6 ipam.Pool
	// Rootless manages an unprivileged user's containers: user-mode networks only,
	// no bridges, no firewall. The default directories are then
	// $XDG_DATA_HOME/ctnet and $XDG_RUNTIME_DIR/ctnet.
	Rootless bool
	// UserNet is the stack of the user-mode networks Run gives a rootless manager's
	// containers (cmd/ctnet's is package usernet's); without it, Run refuses them.
	UserNet UserNetStack
	// CallerReservesHostPorts says that the program holds the host ports it publishes
	// itself, as CNI runtimes do (rootful Podman keeps them open in conmon, and the
	// portmap plugin never looks at sockets): a host socket bound to one is the
	// caller's reservation, not a clash. A port another container publishes still is.
	CallerReservesHostPorts bool
	// Journal, when set, receives every kernel change of every change the manager
	// makes, as the command line that makes it (--explain); with Journal.DryRun the
	// manager makes none, nor any change to the store or the root's files, and says
	// what it would do (--dry-run). A dry run validates as a real change does and
	// fails where it would.
	Journal *netns.Journal
	// DeleteRetired deletes the host links a change took out of service
	// (link.RetiredGroup), after the change has returned: the kernel's deletion waits
	// for RCU grace periods that nothing of the container needs (about 20 ms). nil
	// deletes them in a goroutine of the Manager, which Close waits for; a program
	// that exits right after its change gives a process of its own (cmd/ctnet's and
	// cmd/ctnet-cni's: package internal/linkreaper). When it fails, the goroutine
	// deletes them.
	DeleteRetired func(host *netns.NS) error
	// NoFastPath keeps every container's traffic on the bridge: no eBPF program
	// redirects frames between containers of one network (package fastpath). A
	// change with it set takes the program off the ports it touches, gc off all.
	NoFastPath bool
}

// Manager manages the networks and containers of one root on one host namespace.
type Manager struct {
	stateDir, runDir string
	host             *netns.NS
	log              *slog.Logger
	pools            []ipam.Pool
	pool6            ipam.Pool
	rootless         bool
	userNet          UserNetStack
	callerReserves   bool // Options.CallerReservesHostPorts
	journal          *netns.Journal
	deleteRetired    func(host *netns.NS) error
	deleting         sync.WaitGroup // goroutines deleting retired links
	noFastPath       bool           // Options.NoFastPath
}

// New opens the host namespace and prepares the root's directories.
func New(opts Options) (*Manager, error) {
	m := &Manager{log: opts.Logger, pools: opts.Pools, rootless: opts.Rootless, userNet: opts.UserNet, callerReserves: opts.CallerReservesHostPorts, journal: opts.Journal, deleteRetired: opts.DeleteRetired,
		noFastPath: opts.NoFastPath}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m.pool6 = opts.Pool6
	if !m.pool6.Base.IsValid() {
		m.pool6 = ipam.DefaultPool6
	}
	if m.pools == nil {
		m.pools = ipam.DefaultPools
	}
	switch {
	case opts.Root != "":
		m.stateDir, m.runDir = opts.Root, opts.Root
	default:
		m.stateDir, m.runDir = opts.StateDir, opts.RunDir
		defaultState, defaultRun := "/var/lib/ctnet", "/run/ctnet"
		if m.rootless {
			defaultState, defaultRun = userDirs()
		}
		if m.stateDir == "" {
			m.stateDir = defaultState
		}
		if m.runDir == "" {
			m.runDir = defaultRun
		}
	}
	for _, dir := range []*string{&m.stateDir, &m.runDir} {
		abs, err := filepath.Abs(*dir)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", *dir, err)
		}
		*dir = abs
	}
	if !m.rootless && len(m.stateDir) > firewall.MaxOwnerLen {
		return nil, invalid("ctnet root %s is %d bytes long: use one of at most %d bytes (the host's firewall table records it)", m.stateDir, len(m.stateDir), firewall.MaxOwnerLen)
	}
	var err error
	if opts.HostNetNS != "" {
		m.host, err = netns.Open(opts.HostNetNS)
	} else {
		m.host, err = netns.Current()
	}
	if err != nil {
		return nil, err
	}
	if m.journal != nil {
		if m.rootless {
			m.host.Close()
			return nil, m.journal.Unsupported("unprivileged users' user-mode networks")
		}
		if m.journal.Host == nil {
			m.journal.Host = m.host
		}
		m.host.SetJournal(m.journal)
	}
	return m, nil
}

// dryRun reports whether the manager only says what it would change.
func (m *Manager) dryRun() bool { return m.journal != nil && m.journal.DryRun }

// errDryRun rolls a dry run's store transaction back.
var errDryRun = errors.New("dry run")

// userDirs are an unprivileged user's state and runtime directories, as the XDG
// base directory specification places them, with its fallbacks.
func userDirs() (state, run string) {
	data := os.Getenv("XDG_DATA_HOME")
	if data == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = filepath.Join(os.TempDir(), fmt.Sprintf("ctnet-home-%d", os.Getuid()))
		}
		data = filepath.Join(home, ".local", "share")
	}
	runtime := os.Getenv("XDG_RUNTIME_DIR")
	if runtime == "" {
		runtime = fmt.Sprintf("/run/user/%d", os.Getuid())
		if st, err := os.Stat(runtime); err != nil || !st.IsDir() || unix.Access(runtime, unix.W_OK) != nil {
			runtime = filepath.Join(os.TempDir(), fmt.Sprintf("ctnet-run-%d", os.Getuid()))
		}
	}
	return filepath.Join(data, "ctnet"), filepath.Join(runtime, "ctnet")
}

// Rootless reports whether the manager manages an unprivileged user's containers.
func (m *Manager) Rootless() bool { return m.rootless }

// Close releases the host namespace's handles.
func (m *Manager) Close() error {
	m.deleting.Wait()
	return m.host.Close()
}

// CloseIdleSockets closes the sockets the manager keeps in the host namespace between
// changes (netlink, nftables); the next change opens them again. A program that
// keeps a manager long without changing anything (a supervisor) calls it: the last
// close of an nftables socket waits for nf_tables' release of any change that
// deleted something, anyone's, one RCU grace period, and a supervisor's exit is
// what rm waits for.
func (m *Manager) CloseIdleSockets() { m.host.CloseHandles() }

// deleteRetiredLinks has the links a change retired deleted without waiting for the
// kernel to finish: by Options.DeleteRetired, else by a goroutine. Whoever deletes
// them takes every retired link of the host namespace in one request, so the links
// of changes made meanwhile share its wait.
func (m *Manager) deleteRetiredLinks() {
	// A journal's line for what the deleting process does after the command.
	m.host.Change(link.DeleteRetiredChange, func() error { return nil })
	if m.dryRun() {
		return // a dry run has retired nothing
	}
	if m.deleteRetired != nil {
		err := m.deleteRetired(m.host)
		if err == nil {
			return
		}
		m.log.Warn("deleting retired links in this process instead", "err", err)
	}
	m.deleting.Add(1)
	go func() {
		defer m.deleting.Done()
		// A handle of its own: the Manager's sockets serve its next change meanwhile.
		ns, err := netns.Open(fmt.Sprintf("/proc/self/fd/%d", m.host.Fd()))
		if err == nil {
			_, err = link.DeleteRetired(ns)
			ns.Close()
		}
		if err != nil {
			m.log.Warn("delete retired links (ctnet gc retries it)", "err", err)
		}
	}()
}

func (m *Manager) netnsDir() string { return filepath.Join(m.runDir, "netns") }

// containerDir is named by the short ID: it holds a unix socket, whose path the kernel
// limits to 107 bytes.
func (m *Manager) containerDir(id string) string {
	return filepath.Join(m.runDir, "containers", id[:12])
}

func (m *Manager) ensureDirs() error {
	for _, d := range []string{m.stateDir, m.runDir, m.netnsDir(), filepath.Join(m.runDir, "containers")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	return nil
}

// op is one change in progress: its store transaction and its undo stack.
type op struct {
	ctx   context.Context
	tx    *store.Tx
	undo  *undo
	store *store.Store
	nss   map[string]*netns.NS // namespaces opened during the change, by path
	// committed are kernel changes made only once the store records them: a crash
	// before them leaves the store describing a change the kernel lacks, which gc
	// makes, rather than the reverse, which nothing could attribute.
	committed []undoStep
	// forwarding is set once the change has arranged to turn IPv4 forwarding on,
	// forwarding6 IPv6 forwarding.
	forwarding, forwarding6 bool
	// journal is the manager's: every kernel change goes through it.
	journal *netns.Journal
	// noTables is set while ctnet's firewall tables are known not to exist: a
	// change then builds them instead of adding elements to them.
	noTables bool
	// plannedBridges are the bridges a dry run would have made by now.
	plannedBridges map[string]bool
	// retired is set once the change has taken links out of service, to be deleted
	// after the commit.
	retired bool
	// fastPath is the host namespace's fast path program, once fastPathTried (nil if
	// the kernel has none to give).
	fastPath      *fastpath.Path
	fastPathTried bool
}

// afterCommit makes a kernel change once the transaction has committed.
func (o *op) afterCommit(what string, fn func() error) {
	o.committed = append(o.committed, undoStep{what: what, fn: fn})
}

// runCommitted makes the changes deferred to after the commit; the store already
// describes them, so a failure is reported and left to gc to repair.
func (o *op) runCommitted() error {
	var errs []error
	for _, step := range o.committed {
		if err := step.fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (ctnet gc retries it)", step.what, err))
			continue
		}
		o.undo.debug("kernel change after the commit", step.what)
		fault.Point(step.what)
	}
	return errors.Join(errs...)
}

// open returns the namespace at path, opened once per change.
func (o *op) open(path string) (*netns.NS, error) {
	if ns, ok := o.nss[path]; ok {
		return ns, nil
	}
	ns, err := netns.Open(path)
	if err != nil {
		return nil, err
	}
	o.keep(ns)
	return ns, nil
}

// dryRun reports whether the change only says what it would do.
func (o *op) dryRun() bool { return o.journal != nil && o.journal.DryRun }

// keep adds a namespace opened elsewhere to the change's cache.
func (o *op) keep(ns *netns.NS) {
	if o.nss == nil {
		o.nss = map[string]*netns.NS{}
	}
	ns.SetJournal(o.journal)
	o.nss[ns.Path()] = ns
}

// closeNS closes a cached namespace, before its mount is removed.
func (o *op) closeNS(path string) {
	if ns, ok := o.nss[path]; ok {
		ns.Close()
		delete(o.nss, path)
	}
}

func (o *op) closeAll() {
	if o.fastPath != nil {
		o.fastPath.Close()
	}
	for path := range o.nss {
		o.closeNS(path)
	}
}

// mutate runs fn under the exclusive lock in one store transaction; if fn or the
// commit fails, the undo runs and the transaction rolls back. A change whose ctx
// ends before the commit is undone the same way: it happens whole or not at all.
func (m *Manager) mutate(ctx context.Context, fn func(o *op) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	stateDir := m.stateDir
	if m.dryRun() {
		// A dry run makes no directory, and a root without a store has an empty one.
		if _, err := os.Stat(filepath.Join(stateDir, store.FileName)); errors.Is(err, os.ErrNotExist) {
			tmp, err := os.MkdirTemp("", "ctnet-dry-run-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			stateDir = tmp
		}
	} else if err := m.ensureDirs(); err != nil {
		return err
	}
	s, err := store.Open(stateDir)
	if err != nil {
		return err
	}
	defer s.Close()
	o := &op{ctx: ctx, undo: &undo{log: m.log, start: time.Now()}, store: s, journal: m.journal}
	defer o.closeAll()
	err = s.Update(func(tx *store.Tx) (err error) {
		defer failedStep(&err)
		m.log.Debug("store transaction began", "elapsed", time.Since(o.undo.start))
		o.tx = tx
		if err := ctx.Err(); err != nil {
			return err // while waiting for the lock
		}
		if err := m.checkHost(o); err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if m.dryRun() {
			return errDryRun // roll back: the store stays as it was
		}
		return nil
	})
	if m.dryRun() {
		if !errors.Is(err, errDryRun) {
			return err // refused as the real change would be; nothing to undo
		}
		// What the commit would be followed by, printed and not made as every change
		// of a dry run.
		err := o.runCommitted()
		if o.retired {
			m.deleteRetiredLinks()
		}
		return err
	}
	if err != nil {
		m.log.Debug("store transaction rolled back: undoing its kernel changes", "err", err, "elapsed", time.Since(o.undo.start))
		if uerr := o.undo.run(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
		}
		return err
	}
	m.log.Debug("store transaction committed", "elapsed", time.Since(o.undo.start))
	// A crash here leaves the store ahead of the kernel by the committed changes
	// (IPv4 forwarding), which gc makes.
	fault.Point("store commit")
	err = o.runCommitted()
	if o.retired {
		m.deleteRetiredLinks()
	}
	return err
}

// view runs fn under the shared lock in a read-only transaction. Reading never
// changes the kernel: after a reboot it shows the store's view (liveness still tells
// which containers have exited), and the first change restores the rest. From a
// host namespace other than the root's it refuses, as a change would: what a read
// takes from the host's kernel (firewall entries, bridges) would be another
// namespace's, and the command was almost certainly meant for the root's.
func (m *Manager) view(fn func(tx *store.Tx) error) error {
	id, name, err := m.hostIdentity()
	if err != nil {
		return err
	}
	s, err := store.OpenShared(m.stateDir)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.View(func(tx *store.Tx) error {
		if _, err := m.checkHostNamespace(tx, id, name); err != nil {
			return err
		}
		return fn(tx)
	})
}

// newID is 32 random bytes in hex, as Docker's IDs: from getrandom(2), as
// crypto/rand reads them, which ctnet does not link for this alone, since every
// command would initialise its FIPS packages.
func newID() string {
	b := make([]byte, 32)
	for n := 0; n < len(b); {
		m, err := unix.Getrandom(b[n:], 0)
		if err != nil && err != unix.EINTR {
			panic(fmt.Sprintf("getrandom: %v", err)) // as crypto/rand.Read, which never returns an error
		}
		n += max(m, 0)
	}
	return hex.EncodeToString(b)
}

// taggedError reads as its message alone and matches its sentinel with errors.Is.
type taggedError struct {
	msg      string
	sentinel error
}

func (e *taggedError) Error() string        { return e.msg }
func (e *taggedError) Is(target error) bool { return target == e.sentinel }

func tagged(sentinel error, format string, args ...any) error {
	return &taggedError{msg: fmt.Sprintf(format, args...), sentinel: sentinel}
}

// invalid is bad input that is no one field's: its message says what to fix.
func invalid(format string, args ...any) error { return tagged(ErrInvalid, format, args...) }

// waitExit waits up to timeout for the process to end, and says whether it did; it
// gives up when ctx ends.
func waitExit(ctx context.Context, id proc.ID, timeout time.Duration) (exited bool, err error) {
	deadline := time.Now().Add(timeout)
	for {
		// In slices, so that a cancelled ctx is seen soon; an exit ends a slice at once.
		slice := min(time.Until(deadline), 100*time.Millisecond)
		if id.Wait(max(slice, 0)) {
			return true, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
	}
}

// self is this process's identity, recorded as a container's supervisor.
func self() proc.ID { return proc.Self() }

func quoteList(items []string) string {
	if len(items) > 5 {
		items = append(items[:5:5], fmt.Sprintf("and %d more", len(items)-5))
	}
	return strings.Join(items, ", ")
}
