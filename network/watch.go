package network

import (
	"context"
	"fmt"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/store"
)

// WatchFirewall keeps ctnet's tables as the store describes them until ctx ends:
// whenever nftables reports that a batch removed part of them (`nft flush ruleset`,
// a firewalld reload, a flushing iptables-restore), it repairs them at once with
// RepairFirewall, and report gets a line for each thing restored. It waits on
// nftables' notifications, never polls. A detached container's supervisor runs it,
// and `ctnet watch` on hosts whose containers have none.
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
