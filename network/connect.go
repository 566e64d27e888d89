package network

import (
	"context"
	"net"
	"slices"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/store"
)

// ConnectOptions are the choices of Connect: the address (default: the next free),
// the MAC address (default: one derived from the address), the interface name
// (default: the next free ethN) and its limits (default none).
type ConnectOptions struct {
	IP        string
	IP6       string // on a network with IPv6
	MAC       string
	IfName    string
	Bandwidth Bandwidth
}

// Connect attaches a running container to another network, as its next ethN unless
// opts names the interface.
func (m *Manager) Connect(ctx context.Context, network, ref string, opts ConnectOptions) (*Attachment, error) {
	if opts.IfName != "" {
		if err := checkIfName(opts.IfName); err != nil {
			return nil, err
		}
	}
	var mac net.HardwareAddr
	if opts.MAC != "" {
		var err error
		if mac, err = parseMAC(opts.MAC); err != nil {
			return nil, err
		}
	}
	if err := checkBandwidth(opts.Bandwidth); err != nil {
		return nil, err
	}
	var att *store.Attachment
	err := m.mutate(ctx, func(o *op) error {
		c, n, err := m.liveBridgeContainer(o, network, ref)
		if err != nil {
			return err
		}
		if err := checkMacvlanSpec(n, nil, opts.Bandwidth); err != nil {
			return err
		}
		if att, err = m.allocateAttachment(o, c, n, opts.IP, opts.IP6, opts.IfName); err != nil {
			return err
		}
		if mac != nil {
			att.MAC = mac.String()
		}
		limitAttachment(att, opts.Bandwidth)
		// The firewall before the interface, as in Create: a running container could
		// otherwise send anything from the new interface until its elements came.
		change := firewall.Change{Add: firewall.State{Endpoints: fwEndpoints(o.tx, att)}}
		retargetPorts(c, n, att, &change)
		if err := m.applyFirewall(o, change); err != nil {
			return err
		}
		if err := m.plumbAttachment(o, c, n, att); err != nil {
			return err
		}
		c.Attachments = append(c.Attachments, *att)
		return o.tx.PutContainer(c)
	})
	if err != nil {
		return nil, err
	}
	v := attachmentView(att)
	return &v, nil
}

// retargetPorts moves a container's published ports to att when att is its eth0:
// replies leave by the default route, which eth0 holds, and the anti-spoofing rules
// drop a reply from another network's address there. A runtime that attaches networks
// in any order (Podman gives each the port mappings) may have published them on a
// later interface first.
func retargetPorts(c *store.Container, n *store.Network, att *store.Attachment, change *firewall.Change) {
	if att.IfName != "eth0" || n.Internal {
		return
	}
	for i, p := range c.Ports {
		target := att.IP
		if p.ContainerIP.Is6() {
			target = att.IP6
		}
		if !target.IsValid() || p.ContainerIP == target {
			continue
		}
		change.Remove.Ports = append(change.Remove.Ports, p)
		c.Ports[i].ContainerIP = target
		change.Add.Ports = append(change.Add.Ports, c.Ports[i])
	}
}

// Disconnect removes a container's interface on a network, with the ports published
// on it.
func (m *Manager) Disconnect(ctx context.Context, network, ref string) error {
	return m.mutate(ctx, func(o *op) error {
		c, n, err := m.liveBridgeContainer(o, network, ref)
		if err != nil {
			return err
		}
		return m.disconnect(o, c, n)
	})
}

func (m *Manager) liveBridgeContainer(o *op, network, ref string) (*store.Container, *store.Network, error) {
	c, err := o.tx.Container(ref)
	if err != nil {
		return nil, nil, notFound("container", ref, err)
	}
	n, err := o.tx.Network(network)
	if err != nil {
		return nil, nil, notFound("network", network, err)
	}
	if c.State == store.StateExited || !isAlive(c) {
		return nil, nil, tagged(ErrConflict, "container %s is not running", c.Name)
	}
	if c.Mode != store.ModeBridge {
		return nil, nil, invalid("container %s uses --network %s: only containers with their own namespace on ctnet networks can be connected", c.Name, c.Mode)
	}
	return c, n, nil
}

// removeLinks removes an attachment's links: its veth and ifb on the host, or its
// macvlan interface in the container.
func (m *Manager) removeLinks(o *op, c *store.Container, att *store.Attachment) error {
	if att.HostVeth == "" {
		return m.removeMacvlan(o, c, att)
	}
	if err := m.detachFastPath(o, att.HostVeth); err != nil {
		return err
	}
	if err := m.retireVeth(o, c, att); err != nil {
		return err
	}
	return m.removeIFB(o, att)
}

func (m *Manager) disconnect(o *op, c *store.Container, n *store.Network) error {
	i := slices.IndexFunc(c.Attachments, func(a store.Attachment) bool { return a.NetworkID == n.ID })
	if i < 0 {
		return tagged(ErrNotFound, "container %s is not connected to network %s", c.Name, n.Name)
	}
	att := c.Attachments[i]
	var ports, kept []store.Port
	for _, p := range c.Ports {
		if p.ContainerIP == att.IP || p.ContainerIP == att.IP6 {
			ports = append(ports, p)
		} else {
			kept = append(kept, p)
		}
	}
	// The links first, as in unplumb: a running container would send unchecked from
	// a port still in the bridge once its elements were gone.
	if err := m.removeLinks(o, c, &att); err != nil {
		return err
	}
	if err := m.applyFirewall(o, firewall.Change{Remove: firewall.State{Endpoints: fwEndpoints(o.tx, &att), Ports: slices.Clone(ports)}}); err != nil {
		return err
	}
	for _, p := range ports {
		if err := o.tx.DeletePort(p); err != nil {
			return err
		}
	}
	if err := deleteLeases(o.tx, &att); err != nil {
		return err
	}
	if att.HostVeth != "" {
		if err := o.tx.DeleteVeth(att.HostVeth); err != nil {
			return err
		}
	}
	c.Attachments = slices.Delete(c.Attachments, i, i+1)
	c.Ports = kept
	if c.Ports == nil {
		c.Ports = []store.Port{}
	}
	return o.tx.PutContainer(c)
}
