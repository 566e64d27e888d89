package network

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
)

// fwEndpoints is an attachment's endpoint in the firewall: none on a macvlan network,
// whose traffic does not pass the host's bridge table.
func fwEndpoints(tx *store.Tx, a *store.Attachment) []firewall.Endpoint {
	if a.HostVeth == "" {
		return nil
	}
	return []firewall.Endpoint{fwEndpoint(tx, a)}
}

func fwEndpoint(tx *store.Tx, a *store.Attachment) firewall.Endpoint {
	return firewall.Endpoint{HostVeth: a.HostVeth, MAC: attachmentMAC(a), IP: a.IP, IP6: a.IP6, NoICC: isolatesContainers(tx, a.NetworkID)}
}

// isolatesContainers reports whether the network was created with icc=false. A
// network cannot be removed while a container is on it, nor changed, so its
// endpoints' elements are added and removed with the same answer.
func isolatesContainers(tx *store.Tx, networkID string) bool {
	n, err := tx.Network(networkID)
	return err == nil && n.NoICC
}

// fwContainer is a container's share of the firewall: only containers on bridge
// networks have one (a rootless container's ports are served by its user-mode stack).
func fwContainer(tx *store.Tx, c *store.Container) firewall.State {
	var s firewall.State
	if c.Mode != store.ModeBridge {
		return s
	}
	for i := range c.Attachments {
		s.Endpoints = append(s.Endpoints, fwEndpoints(tx, &c.Attachments[i])...)
	}
	// A copy: the firewall sorts what it is given, and the record's order is its own.
	s.Ports = slices.Clone(c.Ports)
	return s
}

// applyFirewall applies a change element by element. If that fails — the tables are
// missing, or differ from the store — it rebuilds them whole from the store, which
// already holds the change. The undo rebuilds from the last committed state: it runs
// only on failure, where being right matters more than being quick.
func (m *Manager) applyFirewall(o *op, ch firewall.Change) error {
	if ch.Empty() {
		return nil
	}
	conn, err := m.host.NFT()
	if err != nil {
		return err
	}
	// Without tables, adding elements would fail: they are built at once. A dry
	// run, which cannot try, takes the tables to hold what the store says.
	err = errors.New("the tables do not exist")
	if !o.noTables {
		err = m.nft(func() string { return firewall.ApplyScript(ch) }, func() error { return firewall.Apply(conn, ch) })
	}
	if err != nil {
		want, derr := m.desiredFirewall(o.tx)
		if derr != nil {
			return errors.Join(err, derr)
		}
		// The store may or may not record the change yet (a removal usually does not):
		// rebuild from the store with the change applied.
		if rerr := m.rebuild(conn, withChange(want, ch)); rerr != nil {
			return errors.Join(err, rerr)
		}
		o.noTables = false
		m.log.Info("firewall rebuilt from the store", "reason", err)
	}
	o.undo.push("update firewall", func() error { return o.store.View(m.rebuildFirewall) })
	return nil
}

// withChange is s with the change's removals taken out and its additions in, each
// once. Elements are identified as the kernel keys them: networks by bridge,
// endpoints by veth, ports by host address, protocol and port.
func withChange(s firewall.State, ch firewall.Change) firewall.State {
	netKey := func(n firewall.Network) string { return n.Bridge }
	epKey := func(e firewall.Endpoint) string { return e.HostVeth }
	portKey := func(p firewall.Port) string {
		host := "*"
		if !p.AnyAddress() {
			host = p.HostIP.String()
		}
		return fmt.Sprintf("%s %s %d", host, p.Proto, p.HostPort)
	}
	return firewall.State{
		Owner:     s.Owner,
		Networks:  merge(s.Networks, ch.Remove.Networks, ch.Add.Networks, netKey),
		Endpoints: merge(s.Endpoints, ch.Remove.Endpoints, ch.Add.Endpoints, epKey),
		Ports:     merge(s.Ports, ch.Remove.Ports, ch.Add.Ports, portKey),
	}
}

func merge[T any](have, remove, add []T, key func(T) string) []T {
	drop := map[string]bool{}
	for _, x := range remove {
		drop[key(x)] = true
	}
	for _, x := range add {
		drop[key(x)] = true // replaced by the added version below
	}
	var out []T
	for _, x := range have {
		if !drop[key(x)] {
			out = append(out, x)
		}
	}
	return append(out, add...)
}

// rebuildFirewall makes the tables hold exactly what the store describes; with no
// networks there are no tables.
func (m *Manager) rebuildFirewall(tx *store.Tx) error {
	conn, err := m.host.NFT()
	if err != nil {
		return err
	}
	state, err := m.desiredFirewall(tx)
	if err != nil {
		return err
	}
	if len(state.Networks) == 0 {
		return m.nft(firewall.DeleteScript, func() error { return firewall.Delete(conn) })
	}
	return m.rebuild(conn, state)
}

// rebuild replaces the tables with ones holding exactly the state.
func (m *Manager) rebuild(conn *nftables.Conn, state firewall.State) error {
	return m.nft(func() string { return firewall.RebuildScript(state) }, func() error { return firewall.Rebuild(conn, state) })
}

// deleteFirewall deletes ctnet's tables.
func (m *Manager) deleteFirewall(o *op) error {
	conn, err := m.host.NFT()
	if err != nil {
		return err
	}
	if err := m.nft(firewall.DeleteScript, func() error { return firewall.Delete(conn) }); err != nil {
		return err
	}
	o.noTables = true
	return nil
}

// nft makes a firewall change in the host namespace: fn programs it, script is its
// batch as `nft -f -` input, rendered only for a journal.
func (m *Manager) nft(script func() string, fn func() error) error {
	if m.host.Journal() == nil {
		return fn()
	}
	return m.host.Change(netns.Change{Argv: []string{"nft", "-f", "-"}, Stdin: script()}, fn)
}

// desiredFirewall is the firewall state the store describes.
func (m *Manager) desiredFirewall(tx *store.Tx) (firewall.State, error) {
	s := firewall.State{Owner: m.stateDir}
	networks, err := tx.Networks()
	if err != nil {
		return s, err
	}
	for _, n := range networks {
		if !isMacvlan(n) {
			s.Networks = append(s.Networks, fwNetwork(n))
		}
	}
	containers, err := tx.Containers()
	if err != nil {
		return s, err
	}
	for _, c := range containers {
		if c.State == store.StateExited {
			continue
		}
		share := fwContainer(tx, c)
		s.Endpoints = append(s.Endpoints, share.Endpoints...)
		s.Ports = append(s.Ports, share.Ports...)
	}
	return s, nil
}
