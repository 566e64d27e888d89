package network

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"

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
func (m *Manager) GC(ctx context.Context) ([]string, error) {
	var report []string
	err := m.mutate(ctx, func(o *op) (err error) {
		report, err = m.reconcile(o, false)
		return err
	})
	return report, err
}

// reconcile is GC's work inside a change. With restore, the host is known to be new
// (bridges and firewall are rebuilt without asking the kernel first).
//
// It first makes the store right — containers whose process or namespace is gone
// are marked exited — and then makes the kernel follow the store, object by object:
// what the store lacks is removed, what it describes and the kernel lacks is made.
// Every object changed gets one line of the report.
func (m *Manager) reconcile(o *op, restore bool) ([]string, error) {
	var report []string
	say := func(format string, args ...any) { report = append(report, fmt.Sprintf(format, args...)) }

	networks, err := o.tx.Networks()
	if err != nil {
		return nil, err
	}
	networkIDs := map[string]*store.Network{}
	bridges := map[string]int{} // network ID to its bridge's index
	for _, n := range networks {
		networkIDs[n.ID] = n
		if isMacvlan(n) {
			continue // no bridge
		}
		br, err := link.ByName(m.host, n.Bridge)
		var why string
		switch {
		case errors.Is(err, link.ErrNotFound):
			why = "recreated bridge %s of network %s"
		case err != nil:
			return nil, err
		case isUntagged(br):
			why = "finished bridge %s of network %s: an interrupted command left it untagged"
		case !restore:
			bridges[n.ID] = br.Attrs().Index
			continue
		}
		if bridges[n.ID], err = m.plumbNetwork(o, n); err != nil {
			return nil, err
		}
		if why != "" {
			say(why, n.Bridge, n.Name)
		}
	}

	containers, err := o.tx.Containers()
	if err != nil {
		return nil, err
	}
	records := map[string]*store.Container{}
	live := map[string]*store.Container{}
	for _, c := range containers {
		records[c.ID] = c
		if c.State == store.StateExited {
			continue
		}
		var why string
		switch {
		case !isAlive(c):
			why = "its process is gone"
		case !m.netnsPresent(c):
			why = "its network namespace is gone"
		}
		if why != "" {
			if err := m.forget(o, c); err != nil {
				return nil, err
			}
			say("released container %s (%s): %s", c.Name, shortID(c.ID), why)
			continue
		}
		live[c.ID] = c
		if err := m.replumb(o, c, networkIDs, bridges, say); err != nil {
			return nil, err
		}
	}

	if !m.rootless {
		// Links a removal retired are no longer anyone's: their deletion was handed
		// on, and is finished here in case whoever had it died. It completes a
		// removal already made, so it is not reported.
		if _, err := link.DeleteRetired(m.host); err != nil {
			return nil, err
		}
		// A rootless root owns no links: the ones tagged as ctnet's in its namespace
		// are a rootful root's, never this one's to judge.
		if err := m.removeOrphanLinks(o, networkIDs, live, records, say); err != nil {
			return nil, err
		}
	}
	if !m.rootless {
		if err := m.reconcileFastPath(o, networkIDs, live, bridges); err != nil {
			return nil, err
		}
	}
	if err := m.removeOrphanNamespaces(o, live, records, say); err != nil {
		return nil, err
	}
	if err := m.removeOrphanRecords(o, networks, live, say); err != nil {
		return nil, err
	}
	if !m.rootless {
		if err := m.removeStaleTraceTables(live, say); err != nil {
			return nil, err
		}
	}
	if err := m.reconcileFirewall(o, say); err != nil {
		return nil, err
	}
	if err := m.reconcileForwarding(o, bridgeNetworks(networks), say); err != nil {
		return nil, err
	}
	if err := m.reconcileForwarding6(o, say); err != nil {
		return nil, err
	}
	m.removeOrphanRuntimeDirs(o, say)
	return report, nil
}

// forget records that a container has exited without touching the kernel: what it
// held there is then nobody's, and the passes that follow remove it object by object.
func (m *Manager) forget(o *op, c *store.Container) error {
	c.State, c.ExitCode, c.Finished = store.StateExited, -1, time.Now().UTC()
	if c.AutoRemove {
		return m.deleteRecord(o, c)
	}
	return o.tx.PutContainer(c)
}

// exitedOrGone says why an object of container id is not needed any more.
func exitedOrGone(records map[string]*store.Container, id string) string {
	if c := records[id]; c != nil {
		return "its container " + c.Name + " has exited"
	}
	return "its container is gone"
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

// replumb recreates the veth of a live container that is missing or no longer a
// port of its network's bridge (the bridge was made again).
func (m *Manager) replumb(o *op, c *store.Container, networks map[string]*store.Network, bridges map[string]int, say func(string, ...any)) error {
	for i := range c.Attachments {
		a := &c.Attachments[i]
		n := networks[a.NetworkID]
		if n == nil {
			continue // its network is gone; removeOrphanRecords drops the lease
		}
		if isMacvlan(n) {
			if err := m.replumbMacvlan(o, c, n, a, say); err != nil {
				return err
			}
			continue
		}
		veth, err := link.ByName(m.host, a.HostVeth)
		if err != nil && !errors.Is(err, link.ErrNotFound) {
			return err
		}
		if err == nil {
			// A veth of another bridge, left untagged by an interrupted plumbing, or
			// down (a removal that was interrupted had retired it), is made again.
			if veth.Attrs().MasterIndex == bridges[n.ID] && veth.Attrs().Alias == link.ContainerAlias(c.ID) &&
				veth.Attrs().Flags&net.FlagUp != 0 && m.shaped(c, a) {
				continue
			}
			if err := m.detachFastPath(o, a.HostVeth); err != nil {
				return err
			}
			if err := link.Delete(m.host, a.HostVeth); err != nil {
				return err
			}
			o.step("delete veth " + a.HostVeth)
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
		o.step("delete " + a.IfName + " of " + c.Name)
		if err := m.plumbAttachment(o, c, n, a); err != nil {
			return err
		}
		if a.IFB != "" {
			say("reconnected container %s to network %s (%s, interface %s, ifb %s)", c.Name, n.Name, attachmentMACSource(a), a.HostVeth, a.IFB)
		} else {
			say("reconnected container %s to network %s (%s, interface %s)", c.Name, n.Name, attachmentMACSource(a), a.HostVeth)
		}
	}
	return nil
}

// replumbMacvlan makes a live container's macvlan interface again if it is missing
// from its namespace. A parent gone from the host is reported, not repaired: the
// network's segment is not ctnet's to make.
func (m *Manager) replumbMacvlan(o *op, c *store.Container, n *store.Network, a *store.Attachment, say func(string, ...any)) error {
	present, err := m.macvlanPresent(o, c, a)
	if err != nil || present {
		return err
	}
	if _, err := link.ByName(m.host, n.Parent); errors.Is(err, link.ErrNotFound) {
		say("could not reconnect container %s to macvlan network %s: its parent %s is gone from the host", c.Name, n.Name, n.Parent)
		return nil
	}
	if err := m.plumbMacvlan(o, c, n, a); err != nil {
		return err
	}
	say("reconnected container %s to macvlan network %s (%s, interface %s)", c.Name, n.Name, a.IP, a.IfName)
	return nil
}

// removeOrphanLinks deletes host links tagged as ctnet's whose network or container no
// longer exists, or that a live container does not use.
func (m *Manager) removeOrphanLinks(o *op, networks map[string]*store.Network, live, records map[string]*store.Container, say func(string, ...any)) error {
	links, err := link.List(m.host)
	if err != nil {
		return err
	}
	byIndex := func(index int) netlink.Link {
		for _, l := range links {
			if l.Attrs().Index == index {
				return l
			}
		}
		return nil
	}
	for _, l := range links {
		kind, id, ok := link.Owner(l)
		if !ok || link.IsDying(l, byIndex) || l.Attrs().Group == link.RetiredGroup {
			continue // not ctnet's, or going with its namespace: the kernel removes it
		}
		name := l.Attrs().Name
		var why string
		switch kind {
		case link.Untagged:
			// A network's bridge or a live container's veth is finished by plumbing.
			if !linkInUse(networks, live, name) {
				why = "ctnet made it and was interrupted before tagging it"
			}
		case "network":
			if n := networks[id]; n == nil || n.Bridge != name {
				why = "its network no longer exists"
			}
		case "container":
			c := live[id]
			if c == nil {
				why = exitedOrGone(records, id)
			} else if !usesLink(c, name) {
				why = "its container " + c.Name + " does not use it"
			}
		}
		if why == "" {
			continue
		}
		if dying, err := link.Dying(m.host, name); err != nil {
			return err
		} else if dying {
			continue // its namespace's last reference is gone: the kernel removes it
		}
		if err := m.detachFastPath(o, name); err != nil {
			return err
		}
		if err := link.Delete(m.host, name); err != nil {
			return err
		}
		o.step("delete " + name)
		say("removed interface %s: %s", name, why)
	}
	return nil
}

func isUntagged(l netlink.Link) bool {
	kind, _, _ := link.Owner(l)
	return kind == link.Untagged
}

// linkInUse reports whether name is a network's bridge or a live container's veth.
func linkInUse(networks map[string]*store.Network, live map[string]*store.Container, name string) bool {
	for _, n := range networks {
		if n.Bridge == name {
			return true
		}
	}
	for _, c := range live {
		if usesLink(c, name) {
			return true
		}
	}
	return false
}

// usesLink reports whether name is one of c's host links: a veth or an ifb.
func usesLink(c *store.Container, name string) bool {
	for _, a := range c.Attachments {
		if a.HostVeth == name || a.IFB != "" && a.IFB == name {
			return true
		}
	}
	return false
}

// shaped reports whether an attachment's limits, if it has any, are on its veth and
// ifb as the store describes them; the attachment is made again otherwise.
func (m *Manager) shaped(c *store.Container, a *store.Attachment) bool {
	if a.Bandwidth == nil {
		return true
	}
	ok, err := link.Shaped(m.host, link.Shaping{HostVeth: a.HostVeth, IFB: a.IFB, Alias: link.ContainerAlias(c.ID), Limits: *a.Bandwidth})
	return err == nil && ok
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
func (m *Manager) removeOrphanNamespaces(o *op, live, records map[string]*store.Container, say func(string, ...any)) error {
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
		if err := m.removeMacvlansIn(o, path); err != nil {
			return err
		}
		// What the container's command left running ends with its namespace.
		killed, err := m.removeNamespace(o, path, true)
		if err != nil {
			return err
		}
		why := "no container owns it"
		if records[e.Name()] != nil {
			why = exitedOrGone(records, e.Name())
		}
		if killed > 0 {
			why += fmt.Sprintf(" (ended %d processes left in it)", killed)
		}
		say("removed network namespace %s: %s", path, why)
	}
	// A crash between making the directory a mount point and pinning into it.
	released, err := netns.ReleasePinDir(m.netnsDir())
	if released {
		say("unmounted %s: it holds no namespace", m.netnsDir())
	}
	return err
}

// removeMacvlansIn deletes ctnet's macvlan interfaces from a namespace it is about
// to remove, whether or not the store knows the container (a command killed before
// its commit), for the reason removeMacvlans gives.
func (m *Manager) removeMacvlansIn(o *op, path string) error {
	ns, err := o.open(path)
	if err != nil {
		return nil // no namespace left behind the file: nothing in it either
	}
	deleted, err := link.DeleteMacvlans(ns)
	for _, name := range deleted {
		o.step("delete macvlan " + name + " in " + path)
	}
	return err
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
	for name, id := range maps.Collect(o.tx.Veths()) { // collected first: the loop deletes
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
		if a.NetworkID == networkID && (a.IP == ip || a.IP6 == ip) {
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
	want, err := m.desiredFirewall(o.tx)
	if err != nil {
		return err
	}
	if len(want.Networks) == 0 {
		tables, err := firewall.Tables(conn)
		if err != nil || len(tables) == 0 {
			return err
		}
		if err := m.deleteFirewall(o); err != nil {
			return err
		}
		o.step("delete firewall tables")
		for _, t := range tables {
			say("removed firewall table %s: no network needs it", t)
		}
		return nil
	}
	extra, missing, err := firewall.Diff(conn, want)
	if err != nil {
		return err
	}
	structure, err := firewall.Structure(conn)
	if err != nil {
		return err
	}
	missing = append(missing, structure...)
	if len(extra) == 0 && len(missing) == 0 {
		return nil
	}
	for _, e := range extra {
		say("removed firewall %s: nothing owns it", e)
	}
	for _, e := range missing {
		say("restored firewall %s", e)
	}
	if err := m.rebuild(conn, want); err != nil {
		return err
	}
	o.noTables = false
	o.step("rebuild firewall")
	return nil
}

// reconcileForwarding turns IPv4 forwarding off when ctnet turned it on and no
// network is left, and on again when ctnet turned it on for networks that still
// exist (a crash between the commit and the switch).
func (m *Manager) reconcileForwarding(o *op, networks int, say func(string, ...any)) error {
	if m.rootless {
		return nil
	}
	if networks == 0 {
		off, err := m.maybeDisableForwarding(o)
		if off {
			say("turned IPv4 forwarding off: no network needs it")
		}
		return err
	}
	if o.tx.Meta(metaForwarding) != "1" {
		return nil // the administrator's choice
	}
	on, err := m.enableForwarding(o)
	if on {
		say("turned IPv4 forwarding on again: networks need it")
	}
	return err
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
