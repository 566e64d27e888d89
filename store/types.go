package store

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/ctnet/ctnet/internal/bandwidth"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/internal/published"
)

// Network is a network's desired state: everything needed to rebuild its bridge and
// firewall entries from scratch. Subnet and Gateway are invalid on an IPv6-only
// network, Subnet6 and Gateway6 on one without IPv6.
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
	NoICC      bool              `json:"no_icc,omitempty"` // containers cannot reach each other (--opt icc=false)
	Labels     map[string]string `json:"labels,omitempty"`
	Created    time.Time         `json:"created"`
	// NonMasquerade are destinations reached without masquerade, whose sources reach
	// the network by routing (nonMasqueradeCIDRs).
	NonMasquerade []netip.Prefix `json:"non_masquerade,omitempty"`
	// Parent is a macvlan network's host interface (Bridge is then empty), and
	// IPRange the part of the subnet addresses are allocated from (invalid: all).
	Parent  string       `json:"parent,omitempty"`
	IPRange netip.Prefix `json:"ip_range,omitzero"`
}

// Container modes, as Docker names them.
const (
	ModeBridge    = "bridge"    // own namespace, attached to ctnet networks
	ModeHost      = "host"      // the host's own namespace
	ModeNone      = "none"      // own namespace with loopback only
	ModeContainer = "container" // another container's namespace
	ModeUserNet   = "usernet"   // rootless: own user+network namespace, user-mode stack
)

// Container states.
const (
	StateCreated = "created" // resources made, process not started yet
	StateRunning = "running" // process alive, or attached without a process
	StateExited  = "exited"  // process gone; network resources released
)

// Container is a container's record: its namespace, its attachments and published
// ports, and the process that owns it.
type Container struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Mode    string    `json:"mode"`
	// NetNS is the namespace path: a mount under the root's netns directory when
	// OwnsNetNS, else a path that something else made (attach).
	NetNS     string `json:"netns,omitempty"`
	OwnsNetNS bool   `json:"owns_netns"`
	// SharedWith is the container whose namespace this one joined (container:NAME).
	SharedWith  string       `json:"shared_with,omitempty"`
	Hostname    string       `json:"hostname,omitempty"`
	Aliases     []string     `json:"aliases,omitempty"` // more names its networks' embedded DNS answers
	Command     []string     `json:"command,omitempty"`
	Attachments []Attachment `json:"networks"`
	Ports       []Port       `json:"ports"`
	// Attached marks a namespace connected with attach: no process, alive until rm.
	Attached   bool      `json:"attached"`
	Detach     bool      `json:"detach"`
	AutoRemove bool      `json:"auto_remove"`
	State      string    `json:"state"`
	Process    proc.ID   `json:"process"`
	Supervisor proc.ID   `json:"supervisor"`
	ExitCode   int       `json:"exit_code"`
	Finished   time.Time `json:"finished,omitzero"`
	// RuntimeDir holds per-container runtime files (logs, sockets).
	RuntimeDir string `json:"runtime_dir,omitempty"`
	// UserNet configures the user-mode network of a rootless container.
	UserNet *UserNet `json:"usernet,omitempty"`
	// EmbeddedDNS marks a container whose resolv.conf names its embedded DNS server,
	// and Resolvers are where that server forwards what is not a container's name:
	// --dns, or the host's resolvers when it was created. It forwards only while the
	// container is on a network that is not internal.
	EmbeddedDNS bool             `json:"embedded_dns,omitempty"`
	Resolvers   []netip.AddrPort `json:"resolvers,omitempty"`
	// Labels are the user's KEY=VALUE metadata (Docker's --label), which ps filters on.
	Labels map[string]string `json:"labels,omitempty"`
}

// UserNet is the configuration of a rootless container's user-mode network.
type UserNet struct {
	Subnet            netip.Prefix     `json:"subnet"`
	MTU               int              `json:"mtu"`
	AllowHostLoopback bool             `json:"allow_host_loopback"`
	Resolvers         []netip.AddrPort `json:"resolvers,omitempty"` // empty: the host's
}

// Attachment is one interface of a container on one network.
type Attachment struct {
	Network   string     `json:"network"`
	NetworkID string     `json:"network_id"`
	IfName    string     `json:"interface"`
	HostVeth  string     `json:"host_veth"`
	IP        netip.Addr `json:"ip"`
	PrefixLen int        `json:"prefix_len"`
	Gateway   netip.Addr `json:"gateway"`
	MAC       string     `json:"mac"`
	// Bandwidth limits the interface (nil: unlimited); IFB is the ifb device its
	// egress limit is applied on, named after HostVeth.
	Bandwidth *Bandwidth `json:"bandwidth,omitempty"`
	IFB       string     `json:"ifb,omitempty"`

	// IP6, PrefixLen6 and Gateway6 are the interface's IPv6 side, on a network
	// that has one; IP, PrefixLen and Gateway are zero on an IPv6-only network.
	IP6        netip.Addr `json:"ip6,omitzero"`
	PrefixLen6 int        `json:"prefix_len6,omitempty"`
	Gateway6   netip.Addr `json:"gateway6,omitzero"`
}

// Bandwidth is an interface's rate limits.
type Bandwidth = bandwidth.Limits

// Port is one published port. A published range is stored as one Port per host
// port.
type Port = published.Port

// record is what the store keeps under a name. Its checks run on every read, so the
// rest of ctnet can rely on them whatever the file holds: a record stored under
// another name than its own would not be found by it, and IDs are cut to their
// first 12 digits wherever they are shown.
type record interface{ checkRecord(key string) error }

func (n *Network) checkRecord(key string) error { return checkNameAndID(key, n.Name, n.ID) }

func (c *Container) checkRecord(key string) error {
	if err := checkNameAndID(key, c.Name, c.ID); err != nil {
		return err
	}
	if c.SharedWith != "" && !isID(c.SharedWith) {
		return fmt.Errorf("shares the namespace of %q, which is not an ID", c.SharedWith)
	}
	return nil
}

func checkNameAndID(key, name, id string) error {
	if name != key {
		return fmt.Errorf("holds the name %q", name)
	}
	if !isID(id) {
		return fmt.Errorf("has the ID %q, not 64 hexadecimal digits", id)
	}
	return nil
}

// isID reports whether s is an ID as ctnet makes them: 32 random bytes in hex.
func isID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
