package network

import (
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/ctnet/ctnet/fastpath"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/store"
)

// fastPathEligible reports whether an attachment's frames to and from its network's
// other containers may skip the bridge (package fastpath). Not on an icc=false
// network, whose containers must not reach each other at all; not with bandwidth
// limits, whose token buckets are on the veth's egress and its ingress's redirect to
// an ifb, both of which the shortcut would bypass. Not for a CNI runtime's
// container (cni-…): plugins chained after ctnet's (bandwidth, firewall) put their own
// traffic control on the host veth, which the shortcut would bypass and whose
// ingress qdisc cannot share the veth with the program's clsact.
func (m *Manager) fastPathEligible(c *store.Container, n *store.Network, att *store.Attachment) bool {
	return !m.noFastPath && !m.rootless && !strings.HasPrefix(c.Name, "cni-") &&
		!isMacvlan(n) && !n.NoICC && att.Bandwidth == nil && (att.IP.IsValid() || att.IP6.IsValid()) && att.HostVeth != ""
}

// fastPath is the host namespace's program for this change: the one a port of a
// live container runs, else a new one. Nil when the kernel cannot load it (no BPF,
// no cls_bpf, not allowed): the bridge path then serves alone, and doctor says why.
func (m *Manager) fastPath(o *op) *fastpath.Path {
	if o.fastPathTried || m.noFastPath {
		return o.fastPath
	}
	o.fastPathTried = true
	p, err := m.findFastPath(o)
	if err == nil && p == nil {
		p, err = fastpath.Load()
	}
	if err != nil {
		m.log.Debug("no fast path between containers: the bridge serves alone", "err", err)
		return nil
	}
	o.fastPath = p
	return p
}

// findFastPath looks for the program on the host veths the store lists.
func (m *Manager) findFastPath(o *op) (*fastpath.Path, error) {
	h, err := m.host.Netlink()
	if err != nil {
		return nil, err
	}
	for name := range o.tx.Veths() {
		l, err := h.LinkByName(name)
		if err != nil {
			continue // not made yet, or gone: gc's business
		}
		p, err := fastpath.Find(h, l.Attrs().Index)
		if err != nil || p != nil {
			return p, err
		}
	}
	return nil, nil
}

// attachFastPath puts an attachment's host veth on the fast path, if it is eligible.
// Failing to is not the change's failure: the bridge carries its frames, as before.
func (m *Manager) attachFastPath(o *op, c *store.Container, n *store.Network, att *store.Attachment, bridge int) error {
	if !m.fastPathEligible(c, n, att) {
		return nil
	}
	// No command line here loads an eBPF program built in Go (package fastpath).
	o.journal.Comment("put " + att.HostVeth + " on the eBPF fast path, if the kernel takes its program: a clsact qdisc, a cls_bpf filter on ingress, the port's map entries")
	if o.dryRun() {
		return nil
	}
	p := m.fastPath(o)
	if p == nil {
		return nil
	}
	veth, err := link.ByName(m.host, att.HostVeth)
	if err != nil {
		return err
	}
	mac, err := net.ParseMAC(att.MAC)
	if err != nil {
		return err
	}
	h, err := m.host.Netlink()
	if err != nil {
		return err
	}
	port := fastpath.Port{Index: veth.Attrs().Index, MAC: mac, IP: att.IP, IP6: att.IP6, Bridge: bridge}
	changed, err := p.Attach(h, port)
	if err != nil {
		m.log.Debug("no fast path for a container: the bridge serves it", "veth", att.HostVeth, "err", err)
		return nil
	}
	if !changed {
		return nil
	}
	name := att.HostVeth
	o.undo.push("fast path on "+name, func() error { return m.detachFastPath(o, name) })
	return nil
}

// detachFastPath takes a host veth off the fast path before the veth goes (or
// loses its eligibility): its entries first, so that no frame is redirected to a
// port that is no longer there.
func (m *Manager) detachFastPath(o *op, hostVeth string) error {
	o.journal.Comment("take " + hostVeth + " off the eBPF fast path, if it is on it: its map entries, then its filter")
	if o.dryRun() {
		return nil
	}
	veth, err := link.ByName(m.host, hostVeth)
	if errors.Is(err, link.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	h, err := m.host.Netlink()
	if err != nil {
		return err
	}
	detached, err := fastpath.Detach(h, veth.Attrs().Index)
	if err != nil || !detached {
		return err
	}
	o.step("fast path off " + hostVeth)
	return nil
}

// reconcileFastPath makes the fast path follow the store: every eligible port of a
// live container on it (with the current program), every other one off it, and no
// entry left for a link that is gone. It reports nothing of its own: an entry goes
// or comes with an interface whose loss or making again gc has reported.
func (m *Manager) reconcileFastPath(o *op, networks map[string]*store.Network, live map[string]*store.Container, bridges map[string]int) error {
	p := m.fastPath(o)
	wanted := map[int]bool{}
	for _, c := range live {
		for i := range c.Attachments {
			a := &c.Attachments[i]
			n := networks[a.NetworkID]
			if n == nil || a.HostVeth == "" {
				continue
			}
			if p == nil || !m.fastPathEligible(c, n, a) {
				if err := m.detachFastPath(o, a.HostVeth); err != nil {
					return err
				}
				continue
			}
			veth, err := link.ByName(m.host, a.HostVeth)
			if errors.Is(err, link.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			wanted[veth.Attrs().Index] = true
			if err := m.attachFastPath(o, c, n, a, bridges[n.ID]); err != nil {
				return err
			}
		}
	}
	if p == nil {
		return nil
	}
	ports, err := p.Ports()
	if err != nil {
		return err
	}
	for _, port := range ports {
		if wanted[port.Index] {
			continue
		}
		if err := p.Forget(port.Index); err != nil {
			return err
		}
		var addrs []string
		for _, ip := range []netip.Addr{port.IP, port.IP6} {
			if ip.IsValid() {
				addrs = append(addrs, ip.String())
			}
		}
		o.step("fast path forgets " + strings.Join(addrs, " "))
	}
	return nil
}

// doctorFastPath says whether the fast path serves the containers that should take
// it, or why the bridge carries their traffic instead.
func (m *Manager) doctorFastPath(networks []*store.Network, containers []*store.Container, ok func(string, ...any), bad func(string, string, ...any)) error {
	if m.noFastPath {
		ok("the fast path between containers is off (CTNET_FASTPATH=off): the bridge carries their traffic")
		return nil
	}
	byID := map[string]*store.Network{}
	for _, n := range networks {
		byID[n.ID] = n
	}
	h, err := m.host.Netlink()
	if err != nil {
		return err
	}
	var eligible, off int
	for _, c := range containers {
		if c.State == store.StateExited || !isAlive(c) {
			continue
		}
		for i := range c.Attachments {
			a := &c.Attachments[i]
			if n := byID[a.NetworkID]; n == nil || !m.fastPathEligible(c, n, a) {
				continue
			}
			eligible++
			veth, err := link.ByName(m.host, a.HostVeth)
			if err != nil {
				off++
				continue
			}
			p, err := fastpath.Find(h, veth.Attrs().Index)
			if err != nil {
				return err
			}
			if p == nil {
				off++
				continue
			}
			p.Close()
		}
	}
	if off > 0 {
		p, err := fastpath.Load()
		if err != nil {
			bad("none: the bridge carries their traffic, with the same guarantees", "the kernel cannot run ctnet's fast path between containers (%v)", err)
			return nil
		}
		p.Close()
		bad("run `ctnet gc` to put them on it", "%d of %d container interfaces that could take the fast path between containers do not", off, eligible)
		return nil
	}
	ok("the fast path between containers serves %d interfaces (icc=false networks and containers with bandwidth limits stay on the bridge)", eligible)
	return nil
}
