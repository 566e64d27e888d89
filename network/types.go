package network

import (
	"net/netip"
	"strings"
	"time"

	"github.com/ctnet/ctnet/internal/bandwidth"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/store"
)

// The types below are what the API shows of the store's records: copies, so that
// the store's schema can change without changing the API, and so that a caller may
// keep or change them freely. Their JSON form is the CLI's `--format json` output
// (ps, inspect, port, network ls and inspect), which scripts read: its keys and
// shapes stay as they are.

// ModeKind is how a container gets its network, as Docker names the modes.
type ModeKind string

// Modes of a container.
const (
	ModeBridge    ModeKind = "bridge"    // own namespace, on ctnet networks
	ModeHost      ModeKind = "host"      // the host's own namespace
	ModeNone      ModeKind = "none"      // own namespace with loopback only
	ModeContainer ModeKind = "container" // another container's namespace
	ModeUserNet   ModeKind = "usernet"   // an unprivileged user's: own user and network namespace, user-mode stack
)

// Mode is where a container asks for its network. The zero Mode is the default: the
// default network as root, the user-mode network for an unprivileged user. As text
// (and in JSON) it is written in --network syntax, as ParseMode reads it.
type Mode struct {
	Kind ModeKind
	// Network is the network of ModeBridge; empty is the default network.
	Network string
	// Container is the container (name or ID) whose namespace ModeContainer joins.
	Container string
}

// OnNetwork is the mode of a container on the named ctnet network.
func OnNetwork(name string) Mode { return Mode{Kind: ModeBridge, Network: name} }

// ParseMode reads Docker's --network syntax: a network name, or "host", "none",
// "usernet", "container:NAME"; empty is the default.
func ParseMode(s string) Mode {
	switch {
	case s == "":
		return Mode{}
	case s == string(ModeHost), s == string(ModeNone), s == string(ModeUserNet):
		return Mode{Kind: ModeKind(s)}
	case strings.HasPrefix(s, "container:"):
		return Mode{Kind: ModeContainer, Container: strings.TrimPrefix(s, "container:")}
	}
	return OnNetwork(s)
}

// String is the mode in --network syntax, as ParseMode reads it.
func (m Mode) String() string {
	switch m.Kind {
	case ModeBridge:
		return m.Network
	case ModeContainer:
		return "container:" + m.Container
	}
	return string(m.Kind)
}

// MarshalText writes the mode in --network syntax.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads the mode in --network syntax.
func (m *Mode) UnmarshalText(text []byte) error {
	*m = ParseMode(string(text))
	return nil
}

// isNetworkless reports whether the mode gives a container no interface on a ctnet
// network of its own.
func (m Mode) isNetworkless() bool {
	return m.Kind == ModeHost || m.Kind == ModeNone || m.Kind == ModeContainer
}

// Container states.
const (
	StateCreated = "created" // network made, process not started yet
	StateRunning = "running" // process alive, or attached without a process
	StateExited  = "exited"  // process gone; network released
)

// ProcessID identifies a process across PID reuse: its PID with its start time (in
// clock ticks after boot) and the boot's ID. JSON: {"pid", "start_time", "boot_id"},
// each omitted when zero.
type ProcessID struct {
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"start_time,omitempty"`
	BootID    string `json:"boot_id,omitempty"`
}

// Valid reports whether the ID names a process at all.
func (p ProcessID) Valid() bool { return p.PID > 0 }

// Alive reports whether the process still runs (the same process, not one that got
// its PID later).
func (p ProcessID) Alive() bool { return proc.ID(p).Alive() }

// Container is a container: its namespace, its interfaces on networks, its published
// ports and its process. JSON keys, in this order: id, name, created, mode, netns
// (omitted when empty), owns_netns, shared_with (the ID of the container whose
// namespace it joined; omitted when empty), hostname, aliases, command (omitted when
// empty), networks (the attachments, always a list), ports (always a list),
// attached, detach, auto_remove, state, process, supervisor, exit_code, finished
// (omitted when zero), runtime_dir, usernet (omitted when absent), embedded_dns and
// resolvers (omitted when empty), labels (omitted when empty).
type Container struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Mode    ModeKind  `json:"mode"`
	// NetNS is the namespace's path: a mount under the root when OwnsNetNS, else a
	// path something else made (an attached namespace).
	NetNS     string `json:"netns,omitempty"`
	OwnsNetNS bool   `json:"owns_netns"`
	// SharedWith is the ID of the container whose namespace this one joined
	// (ModeContainer).
	SharedWith string `json:"shared_with,omitempty"`
	Hostname   string `json:"hostname,omitempty"`
	// Aliases are more names its networks' embedded DNS servers answer with its
	// addresses.
	Aliases     []string     `json:"aliases,omitempty"`
	Command     []string     `json:"command,omitempty"`
	Attachments []Attachment `json:"networks"`
	Ports       []Port       `json:"ports"`
	// Attached marks a namespace something else made: no process, alive until
	// Remove.
	Attached   bool      `json:"attached"`
	Detach     bool      `json:"detach"`
	AutoRemove bool      `json:"auto_remove"`
	State      string    `json:"state"`
	Process    ProcessID `json:"process"`
	Supervisor ProcessID `json:"supervisor"`
	// ExitCode is the process's status once exited; -1 when unknown.
	ExitCode int       `json:"exit_code"`
	Finished time.Time `json:"finished,omitzero"`
	// RuntimeDir holds the container's runtime files: its log, its resolv.conf,
	// hosts and hostname, an unprivileged user's control socket.
	RuntimeDir string `json:"runtime_dir,omitempty"`
	// UserNet is the user-mode network of an unprivileged user's container.
	UserNet *UserNet `json:"usernet,omitempty"`
	// EmbeddedDNS marks a container whose resolv.conf names its embedded DNS server,
	// and Resolvers are where that server forwards the names that are not
	// containers'.
	EmbeddedDNS bool             `json:"embedded_dns,omitempty"`
	Resolvers   []netip.AddrPort `json:"resolvers,omitempty"`
	// Labels are the caller's KEY=VALUE metadata (Docker's --label).
	Labels map[string]string `json:"labels,omitempty"`
}

// HostnameOrID is the container's hostname: the one it was given, else its short ID,
// as Docker's.
func (c *Container) HostnameOrID() string { return hostname(c.Hostname, c.ID) }

// UserNet is the user-mode network of an unprivileged user's container. JSON keys:
// subnet, mtu, allow_host_loopback, resolvers (omitted when empty: the host's), then
// the container's addresses and gateways the stack gives it: ip, gateway, ip6,
// gateway6.
type UserNet struct {
	Subnet            netip.Prefix     `json:"subnet"`
	MTU               int              `json:"mtu"`
	AllowHostLoopback bool             `json:"allow_host_loopback"`
	Resolvers         []netip.AddrPort `json:"resolvers,omitempty"`
	// Derived from Subnet (IPv4) and fixed (IPv6, fd00::/64), as slirp4netns's; set
	// in the views Manager returns, ignored by the stack.
	IP       netip.Addr `json:"ip"`
	Gateway  netip.Addr `json:"gateway"`
	IP6      netip.Addr `json:"ip6"`
	Gateway6 netip.Addr `json:"gateway6"`
}

// Attachment is a container's interface on one network. JSON keys: network,
// network_id, interface, host_veth, ip, prefix_len, gateway, mac, bandwidth and ifb
// (each omitted when absent), and on a network with IPv6 ip6, prefix_len6 and
// gateway6 (omitted otherwise). On an IPv6-only network ip and gateway are "".
type Attachment struct {
	Network   string     `json:"network"`
	NetworkID string     `json:"network_id"`
	IfName    string     `json:"interface"`
	HostVeth  string     `json:"host_veth"`
	IP        netip.Addr `json:"ip"`
	PrefixLen int        `json:"prefix_len"`
	Gateway   netip.Addr `json:"gateway"`
	MAC       string     `json:"mac"`
	// Bandwidth limits the interface (nil: unlimited), shaped on HostVeth and, for
	// egress, on the ifb device IFB.
	Bandwidth *Bandwidth `json:"bandwidth,omitempty"`
	IFB       string     `json:"ifb,omitempty"`

	IP6        netip.Addr `json:"ip6,omitzero"`
	PrefixLen6 int        `json:"prefix_len6,omitempty"`
	Gateway6   netip.Addr `json:"gateway6,omitzero"`
}

// Bandwidth is an interface's rate limits, as the container sees them: ingress into
// it, egress out of it; rates in bits per second, bursts in bits (0: the default for
// the rate). ParseRate reads a rate as the CLI takes it.
type Bandwidth = bandwidth.Limits

// Port is one published port: HostIP:HostPort/Proto forwarded to the container's
// ContainerIP:ContainerPort; a published range is one Port per host port. An invalid
// or unspecified HostIP is every address. JSON keys: host_ip, host_port,
// container_port, proto, container_ip.
type Port struct {
	HostIP        netip.Addr `json:"host_ip"`
	HostPort      uint16     `json:"host_port"`
	ContainerPort uint16     `json:"container_port"`
	Proto         string     `json:"proto"`
	ContainerIP   netip.Addr `json:"container_ip"`
}

// Network is a network: everything its bridge and firewall entries are made from,
// or, driver macvlan, its containers' interfaces on the parent's segment. JSON keys:
// id, name, driver, bridge (empty for macvlan), subnet, gateway (both "" on an
// IPv6-only network), subnet6, gateway6 (omitted without IPv6), mtu, internal,
// masquerade, no_icc (containers of the network cannot reach each other; omitted when
// false), labels (omitted when empty), created, non_masquerade, parent and
// ip_range (omitted when absent).
type Network struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Driver     string            `json:"driver"`
	Bridge     string            `json:"bridge"`
	Subnet     netip.Prefix      `json:"subnet"`
	Gateway    netip.Addr        `json:"gateway"`
	Subnet6    netip.Prefix      `json:"subnet6,omitzero"`
	Gateway6   netip.Addr        `json:"gateway6,omitzero"`
	MTU        int               `json:"mtu"`
	Internal   bool              `json:"internal"`
	Masquerade bool              `json:"masquerade"`
	NoICC      bool              `json:"no_icc,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Created    time.Time         `json:"created"`
	// NonMasquerade are the destinations the network's containers reach with their own
	// addresses instead of the host's, and the sources that reach them by routing
	// (ip-masq-agent's nonMasqueradeCIDRs: a cluster's pod range).
	NonMasquerade []netip.Prefix `json:"non_masquerade,omitempty"`
	// Parent is a macvlan network's host interface, and IPRange the part of the
	// subnet its addresses are allocated from (invalid: the whole subnet).
	Parent  string       `json:"parent,omitempty"`
	IPRange netip.Prefix `json:"ip_range,omitzero"`
}

func containerView(c *store.Container) *Container {
	v := &Container{
		ID: c.ID, Name: c.Name, Created: c.Created, Mode: ModeKind(c.Mode), NetNS: c.NetNS, OwnsNetNS: c.OwnsNetNS,
		SharedWith: c.SharedWith, Hostname: c.Hostname, Aliases: c.Aliases, Command: c.Command,
		Ports:    portViews(c.Ports),
		Attached: c.Attached, Detach: c.Detach, AutoRemove: c.AutoRemove, State: c.State,
		Process: ProcessID(c.Process), Supervisor: ProcessID(c.Supervisor), ExitCode: c.ExitCode, Finished: c.Finished,
		RuntimeDir: c.RuntimeDir, EmbeddedDNS: c.EmbeddedDNS, Resolvers: c.Resolvers, Labels: c.Labels,
	}
	if c.Attachments != nil {
		v.Attachments = make([]Attachment, len(c.Attachments))
		for i := range c.Attachments {
			v.Attachments[i] = attachmentView(&c.Attachments[i])
		}
	}
	if u := c.UserNet; u != nil {
		layout := userNetAddrs(u.Subnet)
		v.UserNet = &UserNet{Subnet: u.Subnet, MTU: u.MTU, AllowHostLoopback: u.AllowHostLoopback, Resolvers: u.Resolvers,
			IP: layout.Guest, Gateway: layout.Gateway, IP6: userNetIPv6.Guest, Gateway6: userNetIPv6.Gateway}
	}
	return v
}

// attachmentView is a copy of a, its limits included.
func attachmentView(a *store.Attachment) Attachment {
	v := Attachment(*a)
	if a.Bandwidth != nil {
		b := *a.Bandwidth
		v.Bandwidth = &b
	}
	return v
}

func portViews(ports []store.Port) []Port {
	if ports == nil {
		return nil
	}
	out := make([]Port, len(ports))
	for i, p := range ports {
		out[i] = Port(p)
	}
	return out
}

func networkView(n *store.Network) *Network {
	v := Network(*n)
	return &v
}
