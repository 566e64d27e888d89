package network

import (
	"errors"
	"net/netip"
	"strconv"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/ipam"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/store"
)

// allocateAttachment chooses c's address and interface names on n and records them:
// the interface is wantIfName, or else the next free ethN.
// On a network with IPv6 it gets an address of each family; wantIP and wantIP6 ask
// for particular ones.
func (m *Manager) allocateAttachment(o *op, c *store.Container, n *store.Network, wantIP, wantIP6, wantIfName string) (*store.Attachment, error) {
	index := len(c.Attachments)
	for i := range c.Attachments {
		if c.Attachments[i].NetworkID == n.ID {
			return nil, tagged(ErrConflict, "container %s is already connected to network %s", c.Name, n.Name)
		}
	}
	used := map[string]bool{}
	for _, a := range c.Attachments {
		used[a.IfName] = true
	}
	for used["eth"+strconv.Itoa(index)] {
		index++
	}
	ifName := "eth" + strconv.Itoa(index)
	if wantIfName != "" {
		if used[wantIfName] {
			return nil, tagged(ErrConflict, "container %s already has an interface called %s: choose another", c.Name, wantIfName)
		}
		ifName = wantIfName
	}
	att := &store.Attachment{Network: n.Name, NetworkID: n.ID, IfName: ifName}
	if n.Subnet.IsValid() {
		ip, err := m.allocateIP(o, n, wantIP)
		if err != nil {
			return nil, err
		}
		att.IP, att.PrefixLen, att.Gateway = ip, n.Subnet.Bits(), n.Gateway
		if err := o.tx.PutLease(n.ID, ip, c.ID); err != nil {
			return nil, err
		}
	} else if wantIP != "" {
		return nil, badField("IP", wantIP, "network %s has no IPv4: use --ip6", n.Name)
	}
	if n.Subnet6.IsValid() {
		ip6, err := m.allocateIP6(o, n, wantIP6)
		if err != nil {
			return nil, err
		}
		att.IP6, att.PrefixLen6, att.Gateway6 = ip6, n.Subnet6.Bits(), n.Gateway6
		if err := o.tx.PutLease(n.ID, ip6, c.ID); err != nil {
			return nil, err
		}
	} else if wantIP6 != "" {
		return nil, badField("IP6", wantIP6, "network %s has no IPv6: create it with --ipv6", n.Name)
	}
	att.MAC = link.MACFor(attachmentMACSource(att)).String()
	if isMacvlan(n) {
		// No host veth: the interface is on the parent, inside the namespace.
		return att, nil
	}
	att.HostVeth = "vc" + c.ID[:8]
	if index > 0 {
		att.HostVeth += "-" + strconv.Itoa(index)
	}
	if owner := o.tx.VethOwner(att.HostVeth); owner != "" && owner != c.ID {
		return nil, tagged(ErrConflict, "host interface %s is already used by container %s", att.HostVeth, shortID(owner))
	}
	if err := o.tx.PutVeth(att.HostVeth, c.ID); err != nil {
		return nil, err
	}
	return att, nil
}

func (m *Manager) allocateIP(o *op, n *store.Network, want string) (netip.Addr, error) {
	if want == "" {
		return m.nextFree(o, n, func() (netip.Addr, error) {
			return ipam.Next(addressPool(n), o.tx.Cursor(n.ID, false), func(a netip.Addr) bool {
				return a == n.Gateway || o.tx.LeaseOwner(n.ID, a) != ""
			})
		})
	}
	ip, err := ipam.ParseAddr("address", want)
	if err != nil {
		return netip.Addr{}, &FieldError{Field: "IP", Value: want, Err: err}
	}
	if err := ipam.CheckAddr("address", n.Subnet, ip); err != nil {
		return netip.Addr{}, badField("IP", want, "on network %s: %w", n.Name, err)
	}
	if ip == n.Gateway {
		return netip.Addr{}, badField("IP", want, "it is the gateway of network %s", n.Name)
	}
	if err := m.checkLeaseFree(o, n, ip, "IP"); err != nil {
		return netip.Addr{}, err
	}
	return ip, nil
}

// nextFree is next's free address; when the pool is exhausted, the addresses of
// containers whose process died (held until gc runs) are released first, as gc would,
// and next looks again.
func (m *Manager) nextFree(o *op, n *store.Network, next func() (netip.Addr, error)) (netip.Addr, error) {
	ip, err := next()
	if errors.Is(err, ipam.ErrPoolExhausted) {
		if _, err := m.networkUsers(o, n); err != nil {
			return netip.Addr{}, err
		}
		ip, err = next()
	}
	return ip, err
}

// plumbAttachment creates the veth pair into the bridge and configures the container
// end: address, and for eth0 the default route.
func (m *Manager) plumbAttachment(o *op, c *store.Container, n *store.Network, att *store.Attachment) error {
	if isMacvlan(n) {
		return m.plumbMacvlan(o, c, n, att)
	}
	ns, err := o.open(c.NetNS)
	if err != nil {
		return err
	}
	masterIndex := 0 // a bridge a dry run would have made has none
	if !o.plannedBridges[n.Bridge] {
		br, err := link.ByName(m.host, n.Bridge)
		if errors.Is(err, link.ErrNotFound) {
			// The bridge went missing behind our back: make it again.
			if _, err := m.plumbNetwork(o, n); err != nil {
				return err
			}
			if !o.plannedBridges[n.Bridge] {
				br, err = link.ByName(m.host, n.Bridge)
			}
		}
		if err != nil {
			return err
		}
		if br != nil {
			masterIndex = br.Attrs().Index
		}
	}
	mac := attachmentMAC(att)
	peer, err := link.AddVeth(m.host, link.Veth{
		HostName: att.HostVeth, Master: n.Bridge, MasterIndex: masterIndex, MTU: n.MTU,
		PeerName: att.IfName, PeerNS: ns, PeerMAC: mac, IPv6: att.IP6.IsValid(),
	})
	if err != nil {
		return err
	}
	o.undo.push("create veth "+att.HostVeth, func() error { return link.Delete(m.host, att.HostVeth) })
	iface := link.Iface{Index: peer, Name: att.IfName}
	if att.IP.IsValid() {
		iface.Address = netip.PrefixFrom(att.IP, att.PrefixLen)
	}
	if att.IP6.IsValid() {
		iface.Address6 = netip.PrefixFrom(att.IP6, att.PrefixLen6)
	}
	if att.IfName == "eth0" && !n.Internal {
		iface.Gateway, iface.Gateway6 = att.Gateway, att.Gateway6
	}
	if err := link.ConfigureIface(ns, iface); err != nil {
		return err
	}
	o.step("configure " + att.IfName)
	if err := m.shapeAttachment(o, c, n, att); err != nil {
		return err
	}
	if err := m.attachFastPath(o, c, n, att, masterIndex); err != nil {
		return err
	}
	// The tag last: gc takes a tagged veth for a finished one.
	if err := link.FinishPort(m.host, att.HostVeth, link.ContainerAlias(c.ID), true); err != nil {
		return err
	}
	o.step("tag veth " + att.HostVeth + " and turn hairpin on")
	return nil
}

func (m *Manager) unplumb(o *op, c *store.Container) error {
	// Off the fast path first: from here on the firewall alone decides what reaches
	// the container, and what it sends.
	for _, a := range c.Attachments {
		if a.HostVeth == "" {
			continue
		}
		if err := m.detachFastPath(o, a.HostVeth); err != nil {
			return err
		}
	}
	// The firewall's elements go last, once no port of the container is in a bridge:
	// the bridge table lets through what comes from a port it does not know.
	elements := fwContainer(o.tx, c)
	if err := m.removeMacvlans(o, c); err != nil {
		return err
	}
	if c.OwnsNetNS {
		// Without a supervisor, nothing else ends what the container's command left running.
		if _, err := m.removeNamespace(o, c.NetNS, !c.Supervisor.Alive()); err != nil {
			return err
		}
	}
	for _, a := range c.Attachments {
		if a.HostVeth == "" {
			if err := o.tx.DeleteLease(a.NetworkID, a.IP); err != nil {
				return err
			}
			continue
		}
		if err := m.retireVeth(o, c, &a); err != nil {
			return err
		}
		if err := m.removeIFB(o, &a); err != nil {
			return err
		}
		if err := deleteLeases(o.tx, &a); err != nil {
			return err
		}
		if err := o.tx.DeleteVeth(a.HostVeth); err != nil {
			return err
		}
	}
	if err := m.applyFirewall(o, firewall.Change{Remove: elements}); err != nil {
		return err
	}
	for _, p := range c.Ports {
		if err := o.tx.DeletePort(p); err != nil {
			return err
		}
	}
	return nil
}

// retireVeth takes a container's veth pair off the host: retired (retire), out of
// service within the change and deleted after it, with its container end if the
// container's namespace can still be opened (a runtime may have deleted it before
// DEL, taking the end with it). A namespace of the container's own, once
// unmounted, dies with its pairs in the kernel's batched cleanup, but only once its
// last reference is gone (its processes reaped, a lazy unmount's references
// dropped: 6–20 ms after the unmount here); the change does not wait for that, and
// whichever deletes the pair first, the kernel or the process that deletes retired
// links, leaves the other nothing to do.
func (m *Manager) retireVeth(o *op, c *store.Container, a *store.Attachment) error {
	r := link.Retiring{Name: a.HostVeth, Peer: a.IfName, PeerRetired: retiredName(a.HostVeth)}
	if c.NetNS != "" {
		if ns, err := o.open(c.NetNS); err == nil {
			r.PeerNS = ns
		}
	}
	return m.retire(o, r)
}

// retire takes a host link out of service at once (link.Retire), so that when the
// change returns nothing of its container can send or receive through it, and
// leaves the kernel's deletion, whose wait for RCU grace periods the change needs
// nothing of, until after the commit (Manager.deleteRetiredLinks); the container
// end's name is freed after the commit too. A crash before the commit leaves a live
// container's veth outside its bridge, which gc makes again; one after it leaves a
// link the store no longer owns, which gc deletes.
func (m *Manager) retire(o *op, r link.Retiring) error {
	retired, err := link.Retire(m.host, r)
	if err != nil {
		return err
	}
	o.undo.push("take "+r.Name+" out of service", retired.Restore)
	o.afterCommit("hand "+r.Name+" on for deletion", retired.Finish)
	o.retired = true
	return nil
}

// retiredName is what a host veth's container end is called between its retirement
// and its deletion: "rm" for the host end's "vc", unique among ctnet's veths.
func retiredName(hostVeth string) string { return "rm" + hostVeth[len("vc"):] }

// attachmentMACSource is the address an interface's MAC is derived from: its IPv4
// one, or on an IPv6-only network its IPv6 one.
func attachmentMACSource(a *store.Attachment) netip.Addr {
	if a.IP.IsValid() {
		return a.IP
	}
	return a.IP6
}

// deleteLeases releases an interface's addresses of both families.
func deleteLeases(tx *store.Tx, a *store.Attachment) error {
	for _, ip := range []netip.Addr{a.IP, a.IP6} {
		if !ip.IsValid() {
			continue
		}
		if err := tx.DeleteLease(a.NetworkID, ip); err != nil {
			return err
		}
	}
	return nil
}

// allocateIP6 is allocateIP for a network's IPv6 subnet.
func (m *Manager) allocateIP6(o *op, n *store.Network, want string) (netip.Addr, error) {
	if want == "" {
		return m.nextFree(o, n, func() (netip.Addr, error) {
			return ipam.Next6(n.Subnet6, o.tx.Cursor(n.ID, true), func(a netip.Addr) bool {
				return a == n.Gateway6 || o.tx.LeaseOwner(n.ID, a) != ""
			})
		})
	}
	ip, err := ipam.ParseAddr6("address", want)
	if err != nil {
		return netip.Addr{}, &FieldError{Field: "IP6", Value: want, Err: err}
	}
	if err := ipam.CheckAddr6("address", n.Subnet6, ip); err != nil {
		return netip.Addr{}, badField("IP6", want, "on network %s: %w", n.Name, err)
	}
	if ip == n.Gateway6 {
		return netip.Addr{}, badField("IP6", want, "it is the gateway of network %s", n.Name)
	}
	if err := m.checkLeaseFree(o, n, ip, "IP6"); err != nil {
		return netip.Addr{}, err
	}
	return ip, nil
}

// checkLeaseFree refuses an address of the spec's field that a live container holds,
// releasing it from a dead one.
func (m *Manager) checkLeaseFree(o *op, n *store.Network, ip netip.Addr, field string) error {
	owner := o.tx.LeaseOwner(n.ID, ip)
	if owner == "" {
		return nil
	}
	holder, err := o.tx.Container(owner)
	if err == nil && holder.State != store.StateExited && !isAlive(holder) {
		return m.release(o, holder, -1)
	}
	name := shortID(owner)
	if err == nil {
		name = holder.Name
	}
	return &FieldError{Field: field, Value: ip.String(), Err: tagged(ErrConflict, "it is already used by container %s on network %s: choose another, or leave it out", name, n.Name)}
}
