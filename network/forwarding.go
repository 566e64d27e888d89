package network

// enableForwarding turns IPv4 forwarding on in the host namespace, remembering that
// ctnet did so it can turn it off with the last network. Nothing in the kernel says
// who turned forwarding on, so the store must say it first: the switch is made after
// the commit. A crash in between leaves forwarding off where the store wants it on,
// which gc repairs; the reverse would leave it on for good. It reports whether it
// will turn forwarding on.
func (m *Manager) enableForwarding(o *op) (bool, error) {
	if o.forwarding {
		return false, nil // already arranged in this change
	}
	cur, err := m.host.ReadSysctl("net/ipv4/ip_forward")
	if err != nil {
		return false, err
	}
	if cur == "1" {
		return false, nil
	}
	if err := o.tx.PutMeta(metaForwarding, "1"); err != nil {
		return false, err
	}
	o.forwarding = true
	o.afterCommit("enable IPv4 forwarding", func() error { return m.host.WriteSysctl("net/ipv4/ip_forward", "1") })
	return true, nil
}

// maybeDisableForwarding turns IPv4 forwarding off when ctnet turned it on and no
// network is left; it reports whether it did. It runs before the commit, so the store
// never forgets a switch the kernel still has.
func (m *Manager) maybeDisableForwarding(o *op) (bool, error) {
	if o.tx.Meta(metaForwarding) != "1" {
		return false, nil
	}
	networks, err := o.tx.Networks()
	if err != nil || bridgeNetworks(networks) > 0 {
		return false, err
	}
	cur, err := m.host.ReadSysctl("net/ipv4/ip_forward")
	if err != nil {
		return false, err
	}
	if cur != "0" {
		if err := m.host.WriteSysctl("net/ipv4/ip_forward", "0"); err != nil {
			return false, err
		}
		o.undo.push("disable IPv4 forwarding", func() error { return m.host.WriteSysctl("net/ipv4/ip_forward", "1") })
	}
	return cur != "0", o.tx.PutMeta(metaForwarding, "")
}
