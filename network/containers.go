package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/store"
)

// ContainerSpec describes a container to create.
type ContainerSpec struct {
	Name string
	// Network is the network, or a mode: host, none, another container's namespace.
	// The zero Mode is the default network.
	Network  Mode
	IP       string
	IP6      string // on a network with IPv6
	Ports    []PortSpec
	Hostname string
	Command  []string
	// NetNS, when set, is a namespace something else made: the container is attached
	// to it and has no process of its own (ctnet attach).
	NetNS      string
	Detach     bool
	AutoRemove bool
	// Supervisor is the process that runs the container and releases it when it
	// exits; zero means the caller.
	Supervisor ProcessID
	// UserNet configures the user-mode network of an unprivileged user's container.
	UserNet UserNetSpec
	// DNS are the nameservers of the container's resolv.conf (default: the host's
	// that a container can reach). In a user-mode network the container asks
	// 10.0.2.3, which forwards to these.
	DNS []string
	// ExtraHosts are NAME:IP lines for the container's hosts file (Docker's --add-host).
	ExtraHosts []string
	// Aliases are more names the embedded DNS server of its network's containers
	// answers with its address (Docker's --network-alias).
	Aliases []string
	// IfName names the container's interface on its network (default eth0). The
	// default route goes through the interface called eth0, so a namespace that
	// already has its own (a CNI runtime's secondary network) keeps it.
	IfName string
	// MAC is the interface's MAC address on its network (default: one derived from
	// its address).
	MAC string
	// Bandwidth limits the container's interface on its network (the zero value:
	// unlimited).
	Bandwidth Bandwidth
	// Labels are KEY=VALUE metadata kept with the container (Docker's --label).
	Labels map[string]string
}

// Create makes a container's network: a namespace (or the one given), its interface
// on the network with an address and a default route, and its published ports. The
// container is "created" until its process runs (Run makes the container and runs
// it); an attached namespace is "running" at once.
func (m *Manager) Create(ctx context.Context, spec ContainerSpec) (*Container, error) {
	var c *store.Container
	err := m.mutate(ctx, func(o *op) (err error) {
		c, err = m.create(o, spec)
		return err
	})
	if err != nil {
		return nil, err
	}
	return containerView(c), nil
}

func (m *Manager) create(o *op, spec ContainerSpec) (*store.Container, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	// Checked by checkSpec: parsing cannot fail now.
	dns, _ := parseDNS(spec.DNS)
	extra, _ := parseExtraHosts(spec.ExtraHosts)
	var servers []netip.Addr // a user-mode network's go to its forwarder instead
	if !m.rootless {
		var err error
		if servers, err = resolvConfServers(dns); err != nil {
			return nil, err
		}
	}
	c := &store.Container{
		ID: newID(), Name: spec.Name, Created: time.Now().UTC(), Hostname: spec.Hostname, Aliases: spec.Aliases,
		Command: spec.Command, Detach: spec.Detach, AutoRemove: spec.AutoRemove,
		Supervisor: proc.ID(spec.Supervisor), State: store.StateCreated, Ports: []store.Port{}, Attachments: []store.Attachment{},
		Labels: spec.Labels,
	}
	// Host veths are named by the ID's first 8 hex digits: an ID that shares them with
	// another container's would make a clash that is nobody's conflict. Draw again.
	for o.tx.VethOwner("vc"+c.ID[:8]) != "" {
		c.ID = newID()
	}
	if !c.Supervisor.Valid() {
		c.Supervisor = self()
	}
	if err := m.checkNewName(o, c); err != nil {
		return nil, err
	}
	c.RuntimeDir = m.containerDir(c.ID)
	if m.rootless {
		if !spec.Bandwidth.IsZero() {
			return nil, invalid("--ingress-rate and --egress-rate need root: traffic control is on the host's end of a container's veth, which a user-mode network does not have")
		}
		if err := m.createRootless(o, c, spec, dns); err != nil {
			return nil, err
		}
		if err := m.writeEtcFiles(o, c, servers, extra); err != nil {
			return nil, err
		}
		if err := o.tx.PutContainer(c); err != nil {
			return nil, err
		}
		return c, nil
	}
	if !spec.UserNet.isZero() {
		return nil, invalid("--cidr, --mtu and --allow-host-loopback configure the user-mode network of unprivileged users; as root use a ctnet network")
	}
	mode := spec.Network
	switch {
	case mode.Kind == ModeUserNet:
		return nil, invalid("--network usernet is the user-mode network of unprivileged users: as root, use a ctnet network (the default)")
	case mode.isNetworkless():
		if spec.NetNS != "" {
			return nil, invalid("attach connects a namespace to a network: --network %s is not a network", mode)
		}
		if len(spec.Ports) > 0 {
			return nil, invalid("-p has no effect with --network %s: the container does not have its own ports on a ctnet network", mode)
		}
		if spec.IP != "" {
			return nil, invalid("--ip needs a network: it has no effect with --network %s", mode)
		}
		if spec.IP6 != "" {
			return nil, invalid("--ip6 needs a network: it has no effect with --network %s", mode)
		}
		if spec.MAC != "" {
			return nil, invalid("a MAC address needs a network: it has no effect with --network %s", mode)
		}
		if !spec.Bandwidth.IsZero() {
			return nil, invalid("--ingress-rate and --egress-rate have no effect with --network %s: use them on a network, they limit the container's interface there", mode)
		}
	}
	switch mode.Kind {
	case ModeHost:
		c.Mode = store.ModeHost
		if spec.Hostname != "" {
			return nil, invalid("--hostname has no effect with --network host: the container uses the host's name")
		}
	case ModeNone:
		c.Mode = store.ModeNone
		if err := m.ownNetNS(o, c); err != nil {
			return nil, err
		}
	case ModeContainer:
		if err := m.shareNetNS(o, c, mode.Container); err != nil {
			return nil, err
		}
	default:
		c.Mode = store.ModeBridge
		n, err := m.resolveNetwork(o, mode.Network)
		if err != nil {
			return nil, err
		}
		if err := checkMacvlanSpec(n, spec.Ports, spec.Bandwidth); err != nil {
			return nil, err
		}
		// Refused before any change, so that --explain leaves nothing to undo.
		if isMacvlan(n) {
			if err := m.journal.Unsupported("macvlan networks' containers"); err != nil {
				return nil, err
			}
		}
		if !spec.Bandwidth.IsZero() {
			if err := m.journal.Unsupported("bandwidth limits"); err != nil {
				return nil, err
			}
		}
		if n.Internal && len(spec.Ports) > 0 {
			return nil, invalid("network %s is internal: published ports could not be reached; drop -p or use another network", n.Name)
		}
		if err := refuseLoopback6(spec.Ports); err != nil {
			return nil, err
		}
		if spec.NetNS != "" {
			if err := m.foreignNetNS(o, c, spec.NetNS); err != nil {
				return nil, err
			}
		} else if err := m.ownNetNS(o, c); err != nil {
			return nil, err
		}
		att, err := m.allocateAttachment(o, c, n, spec.IP, spec.IP6, spec.IfName)
		if err != nil {
			return nil, err
		}
		if spec.MAC != "" {
			mac, _ := parseMAC(spec.MAC) // checked by checkSpec
			att.MAC = mac.String()
		}
		limitAttachment(att, spec.Bandwidth)
		if c.Ports, err = m.allocatePorts(o, spec.Ports, att.IP, att.IP6, c.ID); err != nil {
			return nil, err
		}
		// The firewall before the interface: from the moment the port is in the
		// bridge, what it sends is held to its addresses (the bridge table lets
		// through what comes from a port it does not know).
		if err := m.applyFirewall(o, firewall.Change{Add: firewall.State{
			Endpoints: fwEndpoints(o.tx, att), Ports: slices.Clone(c.Ports)}}); err != nil {
			return nil, err
		}
		if err := m.plumbAttachment(o, c, n, att); err != nil {
			return nil, err
		}
		c.Attachments = append(c.Attachments, *att)
	}
	if err := m.writeEtcFiles(o, c, servers, extra); err != nil {
		return nil, err
	}
	if c.Attached {
		c.State = store.StateRunning
	}
	if err := o.tx.PutContainer(c); err != nil {
		return nil, err
	}
	return c, nil
}

// shortID is how people see a container ID: its first 12 characters.
func shortID(id string) string { return id[:min(12, len(id))] }

func (m *Manager) checkNewName(o *op, c *store.Container) error {
	if c.Name == "" {
		for range 100 {
			c.Name = randomName()
			if _, err := o.tx.ContainerNamed(c.Name); errors.Is(err, store.ErrNotFound) {
				return nil
			}
		}
		c.Name = shortID(c.ID)
	}
	if err := checkName("container", c.Name); err != nil {
		return err
	}
	existing, err := o.tx.ContainerNamed(c.Name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: the name %s is already used by container %s (%s): remove it or choose another name",
		ErrConflict, c.Name, existing.ID[:12], m.stateOf(existing))
}

// checkHostname applies the kernel's and RFC 1123's rules to a hostname.
func checkHostname(h string) error {
	if err := hostnameRule(h); err != nil {
		return &FieldError{Field: "Hostname", Value: h, Err: err}
	}
	return nil
}

// hostnameRule says why h cannot be a hostname, for the fields that take one:
// the hostname, aliases, the names of extra hosts.
func hostnameRule(h string) error {
	if len(h) > 64 {
		return errors.New("at most 64 characters")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("use dot-separated labels of letters, digits and '-'")
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return errors.New("use dot-separated labels of letters, digits and '-'")
			}
		}
	}
	return nil
}

// resolveNetwork returns the named network, or the default one for "".
func (m *Manager) resolveNetwork(o *op, name string) (*store.Network, error) {
	if name == "" || name == DefaultNetwork {
		return m.ensureDefaultNetwork(o)
	}
	n, err := o.tx.Network(name)
	if err != nil {
		return nil, notFound("network", name, err)
	}
	return n, nil
}

// Containers lists containers ordered by name, with their current state; only
// running ones unless all.
func (m *Manager) Containers(all bool) ([]*Container, error) {
	var out []*Container
	err := m.view(func(tx *store.Tx) error {
		cs, err := tx.Containers()
		if err != nil {
			return err
		}
		for _, c := range cs {
			c.State = m.stateOf(c)
			if all || c.State != store.StateExited {
				out = append(out, containerView(c))
			}
		}
		return nil
	})
	slices.SortStableFunc(out, func(a, b *Container) int { return b.Created.Compare(a.Created) })
	return out, err
}

// Container returns one container with its current state.
func (m *Manager) Container(ref string) (*Container, error) {
	c, err := m.container(ref)
	if err != nil {
		return nil, err
	}
	return containerView(c), nil
}

func (m *Manager) container(ref string) (*store.Container, error) {
	var c *store.Container
	err := m.view(func(tx *store.Tx) (err error) {
		c, err = tx.Container(ref)
		return notFound("container", ref, err)
	})
	if err != nil {
		return nil, err
	}
	c.State = m.stateOf(c)
	return c, nil
}
