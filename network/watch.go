package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/store"
)

// WatchFirewall keeps ctnet's tables as the store describes them until ctx ends:
// whenever nftables reports that a batch removed part of them (`nft flush ruleset`,
// on its own or in a reloaded nftables.conf), it repairs them at once with
// RepairFirewall, and report gets a line for each thing restored. It waits on
// nftables' notifications, never polls. `ctnet watch` runs it, and the supervisors
// of detached containers take turns at it (WatchFirewallInTurn).
//
// Many watchers may run at once, each in its own process: they repair under the
// store's lock, and each reads the kernel again first, so one repairs and the others
// find nothing to do. A repair only adds to tables that are gone, or rebuilds ones
// that are there, which the watchers see as one more removal that needs nothing.
// It refuses to start in a namespace other than the root's, as every command does.
// A rootless manager has no tables: it returns at once.
func (m *Manager) WatchFirewall(ctx context.Context, report func(line string)) error {
	if m.rootless {
		return nil
	}
	if err := m.view(func(*store.Tx) error { return nil }); err != nil {
		return err
	}
	conn, err := m.host.NFTEvents()
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	removals, err := firewall.WatchRemovals(conn)
	if err != nil {
		return err
	}
	repair := func() {
		lines, err := m.RepairFirewall(ctx)
		for _, line := range lines {
			report(line)
		}
		if err != nil && ctx.Err() == nil {
			report(fmt.Sprintf("repairing the firewall tables failed (ctnet gc retries it): %v", err))
		}
	}
	// What was removed before the subscription was not notified.
	repair()
	for {
		removed, err := removals.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch nftables: %w", err)
		}
		m.log.Debug("firewall objects removed", "what", quoteList(removed))
		repair()
	}
}

// RepairFirewall rebuilds ctnet's tables if they lack anything the store describes
// (a table, a chain, a rule, an element) or hold elements it does not, and reports,
// one line each, what it restored and removed; nothing when they were right. It reads
// the kernel under the shared lock first, so that watchers woken by the same flush
// queue for the exclusive lock only while there is something to do, and again under
// the exclusive lock, where only the first of them finds it.
func (m *Manager) RepairFirewall(ctx context.Context) ([]string, error) {
	if m.rootless {
		return nil, nil
	}
	var broken bool
	err := m.view(func(tx *store.Tx) error {
		lines, err := m.firewallDrift(tx)
		broken = len(lines) > 0
		return err
	})
	if err != nil || !broken {
		return nil, err
	}
	var report []string
	err = m.mutate(ctx, func(o *op) error {
		lines, err := m.firewallDrift(o.tx)
		if err != nil || len(lines) == 0 {
			return err
		}
		if err := m.rebuildFirewall(o.tx); err != nil {
			return err
		}
		o.step("rebuild firewall")
		report = lines
		return nil
	})
	if err != nil {
		return nil, err
	}
	return report, nil
}

// firewallDrift describes how the kernel's tables differ from what the store says,
// one line each; with no networks there is nothing ctnet's tables must hold (gc
// removes tables left over).
func (m *Manager) firewallDrift(tx *store.Tx) ([]string, error) {
	want, err := m.desiredFirewall(tx)
	if err != nil || len(want.Networks) == 0 {
		return nil, err
	}
	conn, err := m.host.NFT()
	if err != nil {
		return nil, err
	}
	extra, missing, err := firewall.Diff(conn, want)
	if err != nil {
		return nil, err
	}
	structure, err := firewall.Structure(conn)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, e := range append(missing, structure...) {
		lines = append(lines, "restored firewall "+e)
	}
	for _, e := range extra {
		lines = append(lines, "removed firewall "+e+": nothing owns it")
	}
	return lines, nil
}

// WatchFirewallInTurn is WatchFirewall for processes of which one watching at a time
// is enough: the supervisors of a root's detached containers, each of which would
// otherwise pay for a watcher (a manager, a notification socket and, above all, the
// heap a repair leaves behind: about 1 MB each). They take turns through a lock on
// the root's watch.lock: its holder watches; each of the others waits for the
// holder's end (proc.AwaitEnd: no thread of its own), and then tries again; a PID
// reused meanwhile only costs one more turn. The kernel drops the lock with its
// holder however it ends (SIGKILL included), and a new holder repairs first
// whatever was removed while nobody watched, as every watcher does when it starts.
// A watcher that fails gives its turn up, but those waiting for its process take it
// only once that ends (a supervisor starting meanwhile takes it at once). It returns
// when ctx ends, or the error that ended the watch.
func (m *Manager) WatchFirewallInTurn(ctx context.Context, report func(line string)) error {
	if m.rootless {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(m.runDir, "watch.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	// A POSIX lock, not flock: its holder's PID can be asked for (F_GETLK). No other
	// file of this process may ever open watch.lock, since closing any descriptor of
	// it would drop the lock.
	defer f.Close()
	for {
		holder, err := takeWatchTurn(f)
		if err != nil {
			return err
		}
		switch {
		case holder == 0:
			return m.WatchFirewall(ctx, report)
		case holder < 0:
			// A holder in a PID namespace this one does not see: wait for the lock
			// itself, which costs a thread. Should ctx end first, the wait goes on
			// until this process ends, which is soon.
			locked := make(chan error, 1)
			go func() {
				lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
				locked <- unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &lk)
			}()
			select {
			case err := <-locked:
				if err != nil {
					return fmt.Errorf("lock %s: %w", f.Name(), err)
				}
				return m.WatchFirewall(ctx, report)
			case <-ctx.Done():
				return nil
			}
		}
		if err := proc.AwaitEnd(ctx, holder); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// takeWatchTurn takes the write lock on f (0), or names the process that holds it:
// its PID, or -1 when it is in a PID namespace this one does not see.
func takeWatchTurn(f *os.File) (holder int, err error) {
	whole := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	for {
		lk := whole
		err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
		if err == nil {
			return 0, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			return 0, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		lk = whole
		if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
			return 0, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		if lk.Type != unix.F_UNLCK {
			if lk.Pid <= 0 {
				return -1, nil
			}
			return int(lk.Pid), nil
		}
		// Released between the two calls: try again.
	}
}
