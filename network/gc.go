package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
)

// GC reconciles the kernel with the store and reports what it changed, one line per
// object: containers whose process is gone are released; links, namespaces, firewall
// elements, leases and ports that nothing owns are removed; bridges and firewall
// entries the store describes but the kernel lacks are restored. It is safe at any
// time: it runs under the same lock as every other change.
func (m *Manager) GC() ([]string, error) {
	var report []string
	err := m.mutate(func(o *op) (err error) {
		report, err = m.reconcile(o, false)
		return err
	})
	return report, err
}

// reconcile is GC's work inside a change. With restore, the host is known to be new
// (bridges and firewall are rebuilt without asking the kernel first).
func (m *Manager) reconcile(o *op, restore bool) ([]string, error) {
	var report []string
	say := func(format string, args ...any) { report = append(report, fmt.Sprintf(format, args...)) }

	networks, err := o.tx.Networks()
	if err != nil {
		return nil, err
	}
	networkIDs := map[string]*store.Network{}
	for _, n := range networks {
		networkIDs[n.ID] = n
		if _, err := link.ByName(m.host, n.Bridge); err == nil && !restore {
			continue
		} else if err != nil && !errors.Is(err, link.ErrNotFound) {
			return nil, err
		}
		if err := m.plumbNetwork(o, n); err != nil {
			return nil, err
		}
		say("recreated bridge %s of network %s", n.Bridge, n.Name)
	}

	containers, err := o.tx.Containers()
	if err != nil {
		return nil, err
	}
	live := map[string]*store.Container{}
	for _, c := range containers {
		if c.State == store.StateExited {
			continue
		}
		if !isAlive(c) || !m.netnsPresent(c) {
			if err := m.release(o, c, -1); err != nil {
				return nil, err
			}
			say("released container %s: its process is gone%s", c.Name, describeHoldings(c))
			continue
		}
		live[c.ID] = c
		if err := m.replumb(o, c, networkIDs, say); err != nil {
			return nil, err
		}
	}

	if err := m.removeOrphanLinks(o, networkIDs, live, say); err != nil {
		return nil, err
	}
	if err := m.removeOrphanNamespaces(live, say); err != nil {
		return nil, err
	}
	if err := m.removeOrphanRecords(o, networks, live, say); err != nil {
		return nil, err
	}
	if err := m.reconcileFirewall(o, say); err != nil {
		return nil, err
	}
	m.removeOrphanRuntimeDirs(o, say)
	return report, nil
}

func describeHoldings(c *store.Container) string {
	var s string
	for _, a := range c.Attachments {
		s += fmt.Sprintf("; freed %s on %s and interface %s", a.IP, a.Network, a.HostVeth)
	}
	for _, p := range c.Ports {
		s += fmt.Sprintf("; unpublished %s/%d", p.Proto, p.HostPort)
	}
	if c.OwnsNetNS {
		s += "; removed namespace " + c.NetNS
	}
	return s
}

// netnsPresent reports whether a container's namespace can still be entered.
func (m *Manager) netnsPresent(c *store.Container) bool {
	if c.NetNS == "" {
		return true // host mode
	}
	if c.OwnsNetNS {
		return netns.IsMounted(c.NetNS)
	}
	ns, err := netns.Open(c.NetNS)
	if err != nil {
		return false
	}
	ns.Close()
	return true
}

// replumb recreates the host side of a live container whose veth is missing.
func (m *Manager) replumb(o *op, c *store.Container, networks map[string]*store.Network, say func(string, ...any)) error {
	for i := range c.Attachments {
		a := &c.Attachments[i]
		if _, err := link.ByName(m.host, a.HostVeth); err == nil {
			continue
		} else if !errors.Is(err, link.ErrNotFound) {
			return err
		}
		n := networks[a.NetworkID]
		if n == nil {
			continue // its network is gone; removeOrphanRecords drops the lease
		}
		ns, err := o.open(c.NetNS)
		if err != nil {
			return err
		}
		// The container end may survive a lost host end only if it was moved; remove it
		// so the pair can be made again under the same names.
		if err := link.Delete(ns, a.IfName); err != nil {
			return err
		}
		if err := m.plumbAttachment(o, c, n, a); err != nil {
			return err
		}
		say("reconnected container %s to network %s (%s, interface %s)", c.Name, n.Name, a.IP, a.HostVeth)
	}
	return nil
}

// removeOrphanLinks deletes host links tagged as ctnet's whose network or container no
// longer exists, or that a live container does not use.
func (m *Manager) removeOrphanLinks(o *op, networks map[string]*store.Network, live map[string]*store.Container, say func(string, ...any)) error {
	links, err := link.List(m.host)
	if err != nil {
		return err
	}
	for _, l := range links {
		kind, id, ok := link.ParseAlias(l.Attrs().Alias)
		if !ok {
			continue
		}
		name := l.Attrs().Name
		var why string
		switch kind {
		case "network":
			if n := networks[id]; n == nil || n.Bridge != name {
				why = "its network no longer exists"
			}
		case "container":
			c := live[id]
			if c == nil {
				why = "its container is gone"
			} else if !usesVeth(c, name) {
				why = "its container does not use it"
			}
		}
		if why == "" {
			continue
		}
		if err := link.Delete(m.host, name); err != nil {
			return err
		}
		o.undo.did("delete "+name, nil)
		say("removed interface %s: %s", name, why)
	}
	return nil
}

func usesVeth(c *store.Container, name string) bool {
	for _, a := range c.Attachments {
		if a.HostVeth == name {
			return true
		}
	}
	return false
}

// removeOrphanNamespaces unmounts namespaces under the root that no live container
// owns.
func (m *Manager) removeOrphanNamespaces(live map[string]*store.Container, say func(string, ...any)) error {
	entries, err := os.ReadDir(m.netnsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if c := live[e.Name()]; c != nil && c.OwnsNetNS {
			continue
		}
		path := filepath.Join(m.netnsDir(), e.Name())
		if err := netns.Remove(path); err != nil {
			return err
		}
		say("removed network namespace %s: no container owns it", path)
	}
	return nil
}

// removeOrphanRecords drops leases, ports and veth names held by containers that are
// gone or exited.
func (m *Manager) removeOrphanRecords(o *op, networks []*store.Network, live map[string]*store.Container, say func(string, ...any)) error {
	for _, n := range networks {
		leases, err := o.tx.Leases(n.ID)
		if err != nil {
			return err
		}
		for ip, id := range leases {
			if c := live[id]; c != nil && holdsIP(c, n.ID, ip) {
				continue
			}
			if err := o.tx.DeleteLease(n.ID, ip); err != nil {
				return err
			}
			say("released address %s on network %s: no container holds it", ip, n.Name)
		}
	}
	for p, id := range o.tx.Ports() {
		if c := live[id]; c != nil {
			continue
		}
		if err := o.tx.DeletePort(p); err != nil {
			return err
		}
		say("released host port %s/%d: no container publishes it", p.Proto, p.HostPort)
	}
	for name, id := range o.tx.Veths() {
		if c := live[id]; c != nil && usesVeth(c, name) {
			continue
		}
		if err := o.tx.DeleteVeth(name); err != nil {
			return err
		}
	}
	return nil
}

func holdsIP(c *store.Container, networkID string, ip netip.Addr) bool {
	for _, a := range c.Attachments {
		if a.NetworkID == networkID && a.IP == ip {
			return true
		}
	}
	return false
}

// reconcileFirewall reports how the kernel's tables differ from the store and, if they
// do, rebuilds them atomically.
func (m *Manager) reconcileFirewall(o *op, say func(string, ...any)) error {
	if m.rootless {
		return nil // no firewall: and nftables would refuse an unprivileged user
	}
	conn, err := m.host.NFT()
	if err != nil {
		return err
	}
	want, err := desiredFirewall(o.tx)
	if err != nil {
		return err
	}
	if len(want.Networks) == 0 {
		exists, err := firewall.Exists(conn)
		if err != nil || !exists {
			return err
		}
		if err := firewall.Delete(conn); err != nil {
			return err
		}
		say("removed firewall tables: no network needs them")
		return nil
	}
	extra, missing, err := firewall.Diff(conn, want)
	if err != nil {
		return err
	}
	if len(extra) == 0 && len(missing) == 0 {
		return nil
	}
	for _, e := range extra {
		say("removed firewall %s: nothing owns it", e)
	}
	for _, e := range missing {
		say("restored firewall %s", e)
	}
	if err := firewall.Rebuild(conn, want); err != nil {
		return err
	}
	o.undo.did("rebuild firewall", nil)
	return nil
}

func (m *Manager) removeOrphanRuntimeDirs(o *op, say func(string, ...any)) {
	dir := filepath.Join(m.runDir, "containers")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, err := o.tx.Container(e.Name()); err == nil {
			continue
		}
		if os.RemoveAll(filepath.Join(dir, e.Name())) == nil {
			say("removed runtime files %s: no container", filepath.Join(dir, e.Name()))
		}
	}
}
