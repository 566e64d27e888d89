package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/ipam"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
	"github.com/ctnet/ctnet/usernet/addrs"
)

// ContainerSpec describes a container to create.
type ContainerSpec struct {
	Name string
	// Network is the network, or a mode: host, none, another container's namespace.
	// The zero Mode is the default network.
	Network  Mode
	IP       string
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
}

// ConnectOptions are the choices of Connect: the address (default: the next free)
// and the interface name (default: the next free ethN).
type ConnectOptions struct {
	IP     string
	IfName string
}

// UserNetSpec is what run asks of a user-mode network; zero values are
// slirp4netns' defaults (10.0.2.0/24, MTU 65520).
type UserNetSpec struct {
	CIDR              string
	MTU               int
	AllowHostLoopback bool
}

func (s UserNetSpec) isZero() bool {
	return s.CIDR == "" && s.MTU == 0 && !s.AllowHostLoopback
}

const defaultUserNetMTU = 65520

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
		if n.Internal && len(spec.Ports) > 0 {
			return nil, invalid("network %s is internal: published ports could not be reached; drop -p or use another network", n.Name)
		}
		if spec.NetNS != "" {
			if err := m.foreignNetNS(o, c, spec.NetNS); err != nil {
				return nil, err
			}
		} else if err := m.ownNetNS(o, c); err != nil {
			return nil, err
		}
		att, err := m.allocateAttachment(o, c, n, spec.IP, spec.IfName)
		if err != nil {
			return nil, err
		}
		if c.Ports, err = m.allocatePorts(o, spec.Ports, att.IP, c.ID); err != nil {
			return nil, err
		}
		if err := m.plumbAttachment(o, c, n, att); err != nil {
			return nil, err
		}
		c.Attachments = append(c.Attachments, *att)
		if err := m.applyFirewall(o, firewall.Change{Add: firewall.State{
			Endpoints: []firewall.Endpoint{fwEndpoint(att)}, Ports: fwPorts(c.Ports)}}); err != nil {
			return nil, err
		}
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

// createRootless records an unprivileged user's container. Its namespaces are made
// by the rootless sandbox when it starts, so there is nothing to change in the
// kernel here.
func (m *Manager) createRootless(o *op, c *store.Container, spec ContainerSpec, dns []netip.AddrPort) error {
	if spec.NetNS != "" {
		return invalid("attach needs root: unprivileged users cannot connect namespaces to networks")
	}
	if spec.IP != "" {
		return invalid("--ip needs a ctnet network, which only root has: a user-mode network gives every container %s", UserNetGuest(addrs.DefaultSubnet()))
	}
	mode := spec.Network
	switch {
	case mode.Kind == "" || mode.Kind == ModeUserNet:
		c.Mode = store.ModeUserNet
		un, err := parseUserNet(spec.UserNet, dns)
		if err != nil {
			return err
		}
		c.UserNet = un
		for _, p := range spec.Ports {
			if p.Proto == "sctp" {
				return badField("Ports", p.String(), "user-mode networks publish tcp and udp only")
			}
		}
		ports, err := m.allocatePorts(o, spec.Ports, UserNetGuest(un.Subnet), c.ID)
		if err != nil {
			return err
		}
		c.Ports = ports
		return nil
	case len(spec.Ports) > 0:
		return invalid("-p needs the user-mode network: it has no effect with --network %s", mode)
	case !spec.UserNet.isZero() || len(spec.DNS) > 0:
		return invalid("--cidr, --mtu, --dns and --allow-host-loopback configure the user-mode network: they have no effect with --network %s", mode)
	case mode.Kind == ModeNone:
		c.Mode = store.ModeNone
	case mode.Kind == ModeHost:
		c.Mode = store.ModeHost
	case mode.Kind == ModeContainer:
		ref := mode.Container
		target, err := o.tx.Container(ref)
		if err != nil {
			return notFound("container", ref, err)
		}
		if target.State == store.StateExited || !isAlive(target) {
			return tagged(ErrConflict, "container %s is not running: --network container:%s needs a running container", target.Name, ref)
		}
		switch target.Mode {
		case store.ModeHost:
			c.Mode = store.ModeHost
		case store.ModeContainer:
			c.Mode, c.SharedWith = store.ModeContainer, target.SharedWith
		default:
			c.Mode, c.SharedWith = store.ModeContainer, target.ID
		}
	default:
		return invalid("unprivileged users have no bridge networks: use --network usernet (the default), none, host or container:NAME, or run ctnet as root")
	}
	return nil
}

func parseUserNet(spec UserNetSpec, dns []netip.AddrPort) (*store.UserNet, error) {
	un := &store.UserNet{Subnet: addrs.DefaultSubnet(), MTU: defaultUserNetMTU, AllowHostLoopback: spec.AllowHostLoopback}
	if spec.CIDR != "" {
		p, err := ipam.ParseSubnet(spec.CIDR)
		if err != nil {
			return nil, &FieldError{Field: "UserNet.CIDR", Value: spec.CIDR, Err: err}
		}
		if p.Bits() > 24 {
			return nil, badField("UserNet.CIDR", spec.CIDR, "use a /24 or larger, for the gateway at .2, DNS at .3 and the container at .100")
		}
		un.Subnet = p
	}
	for _, d := range dns {
		if !d.Addr().Is4() {
			return nil, badField("DNS", d.Addr().String(), "the user-mode forwarder asks IPv4 resolvers")
		}
		if d.Port() == 0 {
			d = netip.AddrPortFrom(d.Addr(), 53)
		}
		un.Resolvers = append(un.Resolvers, d)
	}
	if spec.MTU != 0 {
		if spec.MTU < 1280 || spec.MTU > 65520 {
			return nil, badField("UserNet.MTU", strconv.Itoa(spec.MTU), "use a value from 1280 to 65520")
		}
		un.MTU = spec.MTU
	}
	return un, nil
}

// userNetAddrs are the addresses the user-mode stack derives from a subnet: the
// gateway, the DNS forwarder and the container's. p is checked when the container
// is made, so deriving cannot fail.
func userNetAddrs(p netip.Prefix) addrs.Addrs {
	a, _ := addrs.Of(p)
	return a
}

// UserNetGuest is the container's address in a user-mode subnet.
func UserNetGuest(p netip.Prefix) netip.Addr { return userNetAddrs(p).Guest }

// shortID is how people see a container ID: its first 12 characters.
func shortID(id string) string { return id[:min(12, len(id))] }

func (m *Manager) checkNewName(o *op, c *store.Container) error {
	if c.Name == "" {
		for range 100 {
			c.Name = randomName()
			if _, err := o.tx.Container(c.Name); errors.Is(err, store.ErrNotFound) {
				return nil
			}
		}
		c.Name = shortID(c.ID)
	}
	if err := checkName("container", c.Name); err != nil {
		return err
	}
	existing, err := o.tx.Container(c.Name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if existing.Name != c.Name {
		return nil // c.Name matched another container's ID prefix, not its name
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

// ownNetNS creates the container's namespace under the root, with loopback up.
func (m *Manager) ownNetNS(o *op, c *store.Container) error {
	c.NetNS = filepath.Join(m.netnsDir(), c.ID)
	c.OwnsNetNS = true
	ns, err := netns.New(c.NetNS)
	if err != nil {
		return err
	}
	o.undo.push("create namespace "+c.NetNS, func() error { return netns.Remove(c.NetNS) })
	o.keep(ns)
	if err := link.LoopbackUp(ns); err != nil {
		return err
	}
	o.step("bring up loopback")
	return nil
}

// foreignNetNS attaches to a namespace someone else made, leaving it theirs.
func (m *Manager) foreignNetNS(o *op, c *store.Container, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return &FieldError{Field: "NetNS", Value: path, Err: err}
	}
	ns, err := netns.Open(abs)
	if err != nil {
		return &FieldError{Field: "NetNS", Value: path, Err: err}
	}
	o.keep(ns)
	if netns.Same(ns, m.host) {
		return invalid("--netns %s is the host's own namespace: attach a container's namespace", abs)
	}
	c.NetNS, c.Attached = abs, true
	if err := link.LoopbackUp(ns); err != nil {
		return err
	}
	o.step("bring up loopback")
	return nil
}

// shareNetNS makes c join the namespace of another, live container.
func (m *Manager) shareNetNS(o *op, c *store.Container, ref string) error {
	target, err := o.tx.Container(ref)
	if err != nil {
		return notFound("container", ref, err)
	}
	if target.State == store.StateExited || !isAlive(target) {
		return tagged(ErrConflict, "container %s is not running: --network container:%s needs a running container", target.Name, ref)
	}
	if target.Mode == store.ModeHost {
		c.Mode = store.ModeHost
		return nil
	}
	c.Mode, c.SharedWith = store.ModeContainer, target.ID
	if target.SharedWith != "" {
		c.SharedWith = target.SharedWith
	}
	c.NetNS = target.NetNS
	return nil
}

// allocateAttachment chooses c's address and interface names on n and records them:
// the interface is wantIfName, or else the next free ethN.
func (m *Manager) allocateAttachment(o *op, c *store.Container, n *store.Network, wantIP, wantIfName string) (*store.Attachment, error) {
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
	att := &store.Attachment{
		Network: n.Name, NetworkID: n.ID, IfName: ifName,
		PrefixLen: n.Subnet.Bits(), Gateway: n.Gateway,
	}
	ip, err := m.allocateIP(o, n, wantIP)
	if err != nil {
		return nil, err
	}
	att.IP, att.MAC = ip, link.MACFor(ip).String()
	att.HostVeth = "vc" + c.ID[:8]
	if index > 0 {
		att.HostVeth += "-" + strconv.Itoa(index)
	}
	if owner := o.tx.VethOwner(att.HostVeth); owner != "" && owner != c.ID {
		return nil, tagged(ErrConflict, "host interface %s is already used by container %s", att.HostVeth, shortID(owner))
	}
	if err := o.tx.PutLease(n.ID, ip, c.ID); err != nil {
		return nil, err
	}
	if err := o.tx.PutVeth(att.HostVeth, c.ID); err != nil {
		return nil, err
	}
	return att, nil
}

func (m *Manager) allocateIP(o *op, n *store.Network, want string) (netip.Addr, error) {
	if want == "" {
		next := func() (netip.Addr, error) {
			return ipam.Next(n.Subnet, o.tx.Cursor(n.ID), func(a netip.Addr) bool {
				return a == n.Gateway || o.tx.LeaseOwner(n.ID, a) != ""
			})
		}
		ip, err := next()
		if errors.Is(err, ipam.ErrPoolExhausted) {
			// Containers whose process died still hold their addresses until gc runs:
			// release them, as gc would, and look again.
			if _, err := m.networkUsers(o, n); err != nil {
				return netip.Addr{}, err
			}
			ip, err = next()
		}
		return ip, err
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
	if owner := o.tx.LeaseOwner(n.ID, ip); owner != "" {
		holder, err := o.tx.Container(owner)
		if err == nil && holder.State != store.StateExited && !isAlive(holder) {
			if err := m.release(o, holder, -1); err != nil {
				return netip.Addr{}, err
			}
		} else {
			name := shortID(owner)
			if err == nil {
				name = holder.Name
			}
			return netip.Addr{}, tagged(ErrConflict, "address %s on network %s is already used by container %s: choose another --ip, or leave it out", ip, n.Name, name)
		}
	}
	return ip, nil
}

// removeNamespace unpins a namespace ctnet made, first ending the processes still in
// it if killLeftovers, and says how many it ended.
func (m *Manager) removeNamespace(o *op, path string, killLeftovers bool) (killed int, err error) {
	o.closeNS(path)
	if killLeftovers {
		killed = proc.KillInNetNS(proc.NetNSInode(path))
	}
	if err := netns.Remove(path); err != nil {
		return killed, err
	}
	o.step("remove namespace " + path)
	return killed, nil
}

// plumbAttachment creates the veth pair into the bridge and configures the container
// end: address, and for eth0 the default route.
func (m *Manager) plumbAttachment(o *op, c *store.Container, n *store.Network, att *store.Attachment) error {
	ns, err := o.open(c.NetNS)
	if err != nil {
		return err
	}
	br, err := link.ByName(m.host, n.Bridge)
	if errors.Is(err, link.ErrNotFound) {
		// The bridge went missing behind our back: make it again.
		if _, err := m.plumbNetwork(o, n); err != nil {
			return err
		}
		br, err = link.ByName(m.host, n.Bridge)
	}
	if err != nil {
		return err
	}
	mac := link.MACFor(att.IP)
	peer, err := link.AddVeth(m.host, link.Veth{
		HostName: att.HostVeth, MasterIndex: br.Attrs().Index, MTU: n.MTU,
		PeerName: att.IfName, PeerNS: ns, PeerMAC: mac,
	})
	if err != nil {
		return err
	}
	o.undo.push("create veth "+att.HostVeth, func() error { return link.Delete(m.host, att.HostVeth) })
	iface := link.Iface{Index: peer, Address: netip.PrefixFrom(att.IP, att.PrefixLen)}
	if att.IfName == "eth0" && !n.Internal {
		iface.Gateway = att.Gateway
	}
	if err := link.ConfigureIface(ns, iface); err != nil {
		return err
	}
	o.step("configure " + att.IfName)
	// The tag last: gc takes a tagged veth for a finished one.
	if err := link.FinishPort(m.host, att.HostVeth, link.ContainerAlias(c.ID), true); err != nil {
		return err
	}
	o.step("tag veth " + att.HostVeth + " and turn hairpin on")
	return nil
}

func fwEndpoint(a *store.Attachment) firewall.Endpoint {
	mac := link.MACFor(a.IP)
	return firewall.Endpoint{HostVeth: a.HostVeth, MAC: mac, IP: a.IP}
}

// fwContainer is a container's share of the firewall: only containers on bridge
// networks have one (a rootless container's ports are served by its user-mode stack).
func fwContainer(c *store.Container) firewall.State {
	var s firewall.State
	if c.Mode != store.ModeBridge {
		return s
	}
	for i := range c.Attachments {
		s.Endpoints = append(s.Endpoints, fwEndpoint(&c.Attachments[i]))
	}
	s.Ports = fwPorts(c.Ports)
	return s
}

func fwPorts(ports []store.Port) []firewall.Port {
	out := make([]firewall.Port, len(ports))
	for i, p := range ports {
		out[i] = firewall.Port{Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort, ContainerIP: p.ContainerIP, ContainerPort: p.ContainerPort}
	}
	return out
}

// recordStarted records the container's process, making it "running".
func (m *Manager) recordStarted(ctx context.Context, ref string, process ProcessID) error {
	return m.mutate(ctx, func(o *op) error {
		c, err := o.tx.Container(ref)
		if err != nil {
			return notFound("container", ref, err)
		}
		c.Process, c.State = proc.ID(process), store.StateRunning
		return o.tx.PutContainer(c)
	})
}

// exited releases the container's network after its process ended with exitCode;
// with auto-remove the record goes too. It is idempotent.
func (m *Manager) exited(ctx context.Context, ref string, exitCode int) error {
	return m.mutate(ctx, func(o *op) error {
		c, err := o.tx.Container(ref)
		if errors.Is(err, store.ErrNotFound) {
			return nil // removed meanwhile (rm -f)
		}
		if err != nil {
			return err
		}
		if c.State == store.StateExited {
			if c.ExitCode < 0 && exitCode >= 0 {
				c.ExitCode = exitCode
				return o.tx.PutContainer(c)
			}
			return nil
		}
		return m.release(o, c, exitCode)
	})
}

// release frees everything the container holds on the host: firewall entries, veths,
// its own namespace, leases, ports, veth names; the record stays as "exited" unless
// auto-remove. Teardown steps tolerate what is already gone. exitCode -1 means
// unknown.
func (m *Manager) release(o *op, c *store.Container, exitCode int) error {
	if err := m.unplumb(o, c); err != nil {
		return err
	}
	c.State, c.ExitCode, c.Finished = store.StateExited, exitCode, time.Now().UTC()
	if c.AutoRemove {
		return m.deleteRecord(o, c)
	}
	return o.tx.PutContainer(c)
}

func (m *Manager) unplumb(o *op, c *store.Container) error {
	if err := m.applyFirewall(o, firewall.Change{Remove: fwContainer(c)}); err != nil {
		return err
	}
	if c.OwnsNetNS {
		// Without a supervisor, nothing else ends what the container's command left running.
		if _, err := m.removeNamespace(o, c.NetNS, !c.Supervisor.Alive()); err != nil {
			return err
		}
	}
	// All of a container's veths have their peers in the one namespace: once one
	// shows that something still holds it, the others need not be waited for.
	awaitCleanup := c.OwnsNetNS
	for _, a := range c.Attachments {
		dying, err := m.removeVeth(o, a.HostVeth, awaitCleanup)
		if err != nil {
			return err
		}
		awaitCleanup = awaitCleanup && dying
		if err := o.tx.DeleteLease(a.NetworkID, a.IP); err != nil {
			return err
		}
		if err := o.tx.DeleteVeth(a.HostVeth); err != nil {
			return err
		}
	}
	for _, p := range c.Ports {
		if err := o.tx.DeletePort(p); err != nil {
			return err
		}
	}
	return nil
}

// removeVeth takes a container's veth pair off the host. Deleting one costs the
// kernel two RCU grace periods (tens of milliseconds); a container's own namespace,
// once unmounted and empty, is destroyed by the kernel with its pairs in a batched
// cleanup nobody waits for. So for such a container (awaitCleanup) ctnet waits only
// until the kernel has begun (the pair's peer namespace is gone) and reports that,
// and deletes the pair itself only if something outside still holds the namespace.
func (m *Manager) removeVeth(o *op, name string, awaitCleanup bool) (dying bool, err error) {
	if awaitCleanup {
		dying, err := link.AwaitDying(m.host, name, 100*time.Millisecond)
		if err != nil || dying {
			return dying, err
		}
	}
	if err := link.Delete(m.host, name); err != nil {
		return false, err
	}
	o.step("delete veth " + name)
	return false, nil
}
func (m *Manager) deleteRecord(o *op, c *store.Container) error {
	if err := os.RemoveAll(c.RuntimeDir); err != nil {
		return fmt.Errorf("remove runtime files of %s: %w", c.Name, err)
	}
	return o.tx.DeleteContainer(c)
}

// Remove removes containers. A running one is refused unless force, which kills it;
// an attached namespace is detached and left to its owner.
func (m *Manager) Remove(ctx context.Context, ref string, force bool) error {
	var supervisor proc.ID
	err := m.mutate(ctx, func(o *op) error {
		c, err := o.tx.Container(ref)
		if err != nil {
			return notFound("container", ref, err)
		}
		supervisor = c.Supervisor
		return m.remove(o, c, force)
	})
	if err == nil && supervisor.Valid() && supervisor != self() {
		// A killed container's supervisor still wakes up to release it (finding it
		// gone); once rm returns nothing of the container may still work on the root.
		if _, werr := waitExit(ctx, supervisor, 10*time.Second); werr != nil {
			return werr
		}
	}
	return err
}

func (m *Manager) remove(o *op, c *store.Container, force bool) error {
	if c.State != store.StateExited && isAlive(c) && !c.Attached {
		if !force {
			return tagged(ErrConflict, "container %s is running: stop it first, or use rm -f", c.Name)
		}
		if err := killAndWait(o.ctx, c); err != nil {
			return err
		}
	}
	if err := m.checkNoSharers(o, c); err != nil {
		return err
	}
	if c.State != store.StateExited {
		if err := m.unplumb(o, c); err != nil {
			return err
		}
	}
	return m.deleteRecord(o, c)
}

// checkNoSharers refuses to take away a namespace that live containers joined.
func (m *Manager) checkNoSharers(o *op, c *store.Container) error {
	if !c.OwnsNetNS {
		return nil
	}
	all, err := o.tx.Containers()
	if err != nil {
		return err
	}
	for _, other := range all {
		if other.SharedWith == c.ID && other.State != store.StateExited && isAlive(other) {
			return tagged(ErrConflict, "container %s runs in the network namespace of %s: remove it first", other.Name, c.Name)
		}
	}
	return nil
}

func killAndWait(ctx context.Context, c *store.Container) error {
	target := c.Process
	if !target.Valid() {
		target = c.Supervisor
	}
	if err := target.Signal(unix.SIGKILL); err != nil {
		return err
	}
	if exited, err := waitExit(ctx, target, 10*time.Second); err != nil {
		return err
	} else if !exited {
		return fmt.Errorf("kill container %s: process %d did not exit", c.Name, target.PID)
	}
	if c.OwnsNetNS {
		proc.KillInNetNS(proc.NetNSInode(c.NetNS))
	}
	return nil
}

// Stop sends SIGTERM to the container's process, SIGKILL after timeout, and waits
// until its supervisor has released the network (or releases it itself if the
// supervisor is gone). If ctx ends while it waits, the signals sent stay sent and
// the network is left to the supervisor.
func (m *Manager) Stop(ctx context.Context, ref string, timeout time.Duration) error {
	var c *store.Container
	err := m.view(func(tx *store.Tx) (err error) {
		c, err = tx.Container(ref)
		return notFound("container", ref, err)
	})
	if err != nil {
		return err
	}
	if c.Attached {
		return invalid("container %s is an attached namespace without a process: use rm to detach it", c.Name)
	}
	if c.State != store.StateExited && isAlive(c) {
		target := c.Process
		if !target.Valid() {
			target = c.Supervisor
		}
		if err := target.Signal(unix.SIGTERM); err != nil {
			return err
		}
		exited, err := waitExit(ctx, target, timeout)
		if err != nil {
			return err
		}
		if !exited {
			if err := target.Signal(unix.SIGKILL); err != nil {
				return err
			}
			if _, err := waitExit(ctx, target, 10*time.Second); err != nil {
				return err
			}
		}
		// The supervisor releases the network when it sees the exit; give it the chance
		// to record the real exit status.
		if _, err := waitExit(ctx, c.Supervisor, 5*time.Second); err != nil {
			return err
		}
	}
	return m.mutate(ctx, func(o *op) error {
		c, err := o.tx.Container(c.ID)
		if errors.Is(err, store.ErrNotFound) {
			return nil // auto-removed
		}
		if err != nil || c.State == store.StateExited {
			return err
		}
		return m.release(o, c, -1)
	})
}

// isAlive reports whether a container still holds its network: its process runs, or,
// before the process is recorded, its supervisor does — or, if the supervisor died
// between starting the process and recording it, some process is in the container's
// own namespace. An attached namespace is alive until rm.
func isAlive(c *store.Container) bool {
	switch {
	case c.Attached:
		return true
	case c.Process.Valid():
		return c.Process.Alive()
	case c.Supervisor.Alive():
		return true
	default:
		return c.OwnsNetNS && c.Mode != store.ModeUserNet && proc.NetNSInUse(proc.NetNSInode(c.NetNS))
	}
}

// stateOf is the state a container is in now: a container whose process died
// unnoticed reads as exited.
func (m *Manager) stateOf(c *store.Container) string {
	if c.State != store.StateExited && !isAlive(c) {
		return store.StateExited
	}
	return c.State
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

// Connect attaches a running container to another network, as its next ethN unless
// opts names the interface.
func (m *Manager) Connect(ctx context.Context, network, ref string, opts ConnectOptions) (*Attachment, error) {
	if opts.IfName != "" {
		if err := checkIfName(opts.IfName); err != nil {
			return nil, err
		}
	}
	var att *store.Attachment
	err := m.mutate(ctx, func(o *op) error {
		c, n, err := m.liveBridgeContainer(o, network, ref)
		if err != nil {
			return err
		}
		if att, err = m.allocateAttachment(o, c, n, opts.IP, opts.IfName); err != nil {
			return err
		}
		if err := m.plumbAttachment(o, c, n, att); err != nil {
			return err
		}
		c.Attachments = append(c.Attachments, *att)
		if err := m.applyFirewall(o, firewall.Change{Add: firewall.State{Endpoints: []firewall.Endpoint{fwEndpoint(att)}}}); err != nil {
			return err
		}
		return o.tx.PutContainer(c)
	})
	if err != nil {
		return nil, err
	}
	v := Attachment(*att)
	return &v, nil
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

func (m *Manager) disconnect(o *op, c *store.Container, n *store.Network) error {
	i := slices.IndexFunc(c.Attachments, func(a store.Attachment) bool { return a.NetworkID == n.ID })
	if i < 0 {
		return tagged(ErrNotFound, "container %s is not connected to network %s", c.Name, n.Name)
	}
	att := c.Attachments[i]
	var ports, kept []store.Port
	for _, p := range c.Ports {
		if p.ContainerIP == att.IP {
			ports = append(ports, p)
		} else {
			kept = append(kept, p)
		}
	}
	if err := m.applyFirewall(o, firewall.Change{Remove: firewall.State{Endpoints: []firewall.Endpoint{fwEndpoint(&att)}, Ports: fwPorts(ports)}}); err != nil {
		return err
	}
	if err := link.Delete(m.host, att.HostVeth); err != nil {
		return err
	}
	o.step("delete veth " + att.HostVeth)
	for _, p := range ports {
		if err := o.tx.DeletePort(p); err != nil {
			return err
		}
	}
	if err := o.tx.DeleteLease(n.ID, att.IP); err != nil {
		return err
	}
	if err := o.tx.DeleteVeth(att.HostVeth); err != nil {
		return err
	}
	c.Attachments = slices.Delete(c.Attachments, i, i+1)
	c.Ports = kept
	if c.Ports == nil {
		c.Ports = []store.Port{}
	}
	return o.tx.PutContainer(c)
}
