package network

import (
	"net"
	"strings"

	"github.com/ctnet/ctnet/link"
)

// metaForwarding6 is "1" when ctnet turned net.ipv6.conf.all.forwarding on.
const metaForwarding6 = "forwarding6"

// enableForwarding6 turns IPv6 forwarding on for the first network with IPv6, as
// enableForwarding does IPv4's: the store says so first, the switch follows the
// commit. Forwarding on makes the kernel ignore router advertisements on interfaces
// with accept_ra=1, so a host that learnt its default route from one would lose it
// when that route expires (Docker's long-standing complaint): those interfaces get
// accept_ra=2, which keeps taking them while forwarding, just before.
func (m *Manager) enableForwarding6(o *op) (bool, error) {
	if o.forwarding6 {
		return false, nil
	}
	cur, err := m.host.ReadSysctl("net/ipv6/conf/all/forwarding")
	if err != nil {
		return false, err
	}
	if cur == "1" {
		return false, nil
	}
	if err := o.tx.PutMeta(metaForwarding6, "1"); err != nil {
		return false, err
	}
	o.forwarding6 = true
	o.afterCommit("keep router advertisements on the host's interfaces", m.keepHostRAs)
	o.afterCommit("enable IPv6 forwarding", func() error { return m.host.WriteSysctl("net/ipv6/conf/all/forwarding", "1") })
	return true, nil
}

// keepHostRAs sets accept_ra=2 on every host interface with accept_ra=1. It is
// left so when forwarding goes off again: with forwarding off, 2 means what 1 does.
func (m *Manager) keepHostRAs() error {
	links, err := link.List(m.host)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue // no router advertises to lo
		}
		key := "net/ipv6/conf/" + l.Attrs().Name + "/accept_ra"
		v, err := m.host.ReadSysctl(key)
		if err != nil || strings.TrimSpace(v) != "1" {
			continue // no IPv6 on it, or not taking advertisements
		}
		if err := m.host.WriteSysctl(key, "2"); err != nil {
			return err
		}
	}
	return nil
}

// maybeDisableForwarding6 turns IPv6 forwarding off when ctnet turned it on and no
// network with IPv6 is left; it reports whether it did. It runs before the commit.
func (m *Manager) maybeDisableForwarding6(o *op) (bool, error) {
	if o.tx.Meta(metaForwarding6) != "1" {
		return false, nil
	}
	need, err := m.needForwarding6(o)
	if err != nil || need {
		return false, err
	}
	cur, err := m.host.ReadSysctl("net/ipv6/conf/all/forwarding")
	if err != nil {
		return false, err
	}
	if cur != "0" {
		if err := m.host.WriteSysctl("net/ipv6/conf/all/forwarding", "0"); err != nil {
			return false, err
		}
		o.undo.push("disable IPv6 forwarding", func() error { return m.host.WriteSysctl("net/ipv6/conf/all/forwarding", "1") })
	}
	return cur != "0", o.tx.PutMeta(metaForwarding6, "")
}

// needForwarding6 reports whether any network has IPv6.
func (m *Manager) needForwarding6(o *op) (bool, error) {
	networks, err := o.tx.Networks()
	if err != nil {
		return false, err
	}
	for _, n := range networks {
		if n.Subnet6.IsValid() {
			return true, nil
		}
	}
	return false, nil
}

// reconcileForwarding6 is reconcileForwarding for IPv6: off when ctnet turned it on
// and no network has IPv6, on again when ctnet turned it on and one still does.
func (m *Manager) reconcileForwarding6(o *op, say func(string, ...any)) error {
	if m.rootless {
		return nil
	}
	need, err := m.needForwarding6(o)
	if err != nil {
		return err
	}
	if !need {
		off, err := m.maybeDisableForwarding6(o)
		if off {
			say("turned IPv6 forwarding off: no network needs it")
		}
		return err
	}
	if o.tx.Meta(metaForwarding6) != "1" {
		return nil // the administrator's choice
	}
	on, err := m.enableForwarding6(o)
	if on {
		say("turned IPv6 forwarding on again: networks with IPv6 need it")
	}
	return err
}
