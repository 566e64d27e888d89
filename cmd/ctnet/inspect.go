package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ctnet/ctnet/network"
)

// containerDoc is a container as `inspect --format TEMPLATE` sees it: Docker's field
// names where Docker has the field ({{.State.Pid}}, {{.NetworkSettings.IPAddress}},
// {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}), then ctnet's own.
type containerDoc struct {
	Id, ID, Name, Created, Path string
	Args                        []string
	State                       stateDoc
	Config                      struct {
		Hostname string
		Cmd      []string
		Labels   map[string]string
	}
	HostConfig      struct{ NetworkMode string }
	NetworkSettings networkSettingsDoc
	// ctnet's own, as in --format json.
	Mode, NetNS string
	Attached    bool
	Aliases     []string
	Stack       any
	Firewall    []string
}

type stateDoc struct {
	Status                string
	Running               bool
	Pid, ExitCode         int
	StartedAt, FinishedAt string
}

type networkSettingsDoc struct {
	SandboxKey, IPAddress, Gateway, MacAddress string
	IPPrefixLen                                int
	GlobalIPv6Address, IPv6Gateway             string
	GlobalIPv6PrefixLen                        int
	Ports                                      map[string][]portBindingDoc
	Networks                                   map[string]endpointDoc
}

type portBindingDoc struct{ HostIp, HostPort string }

type endpointDoc struct {
	NetworkID, IPAddress, Gateway, MacAddress string
	IPPrefixLen                               int
	GlobalIPv6Address, IPv6Gateway            string
	GlobalIPv6PrefixLen                       int
	Aliases                                   []string
	// ctnet's own: the interface's names inside and on the host.
	Interface, HostVeth string
}

func newContainerDoc(info *network.ContainerInspect) containerDoc {
	c := info.Container
	d := containerDoc{Id: c.ID, ID: c.ID, Name: c.Name, Created: c.Created.Format(time.RFC3339Nano),
		Mode: string(c.Mode), NetNS: c.NetNS, Attached: c.Attached, Aliases: c.Aliases}
	if len(c.Command) > 0 {
		d.Path, d.Args = c.Command[0], c.Command[1:]
	}
	d.State = stateDoc{Status: c.State, Running: c.State == network.StateRunning, Pid: c.Process.PID, ExitCode: c.ExitCode,
		StartedAt: c.Created.Format(time.RFC3339Nano)}
	if c.State != network.StateExited {
		d.State.ExitCode = 0
	}
	if !c.Finished.IsZero() {
		d.State.FinishedAt = c.Finished.Format(time.RFC3339Nano)
	}
	d.Config.Hostname, d.Config.Cmd, d.Config.Labels = c.HostnameOrID(), c.Command, c.Labels
	if d.Config.Labels == nil {
		d.Config.Labels = map[string]string{} // Docker's is {} when there are none
	}
	d.HostConfig.NetworkMode = networksOf(c)
	if c.Mode == network.ModeBridge && len(c.Attachments) > 0 {
		d.HostConfig.NetworkMode = c.Attachments[0].Network
	}
	ns := &d.NetworkSettings
	ns.SandboxKey = c.NetNS
	ns.Ports = map[string][]portBindingDoc{}
	for _, p := range c.Ports {
		key := fmt.Sprintf("%d/%s", p.ContainerPort, p.Proto)
		ns.Ports[key] = append(ns.Ports[key], portBindingDoc{HostIp: hostIP(p), HostPort: strconv.Itoa(int(p.HostPort))})
	}
	ns.Networks = map[string]endpointDoc{}
	if c.State != network.StateExited {
		for i, at := range c.Attachments {
			ep := endpointDoc{NetworkID: at.NetworkID, IPAddress: addrText(at.IP), Gateway: addrText(at.Gateway),
				MacAddress: at.MAC, IPPrefixLen: at.PrefixLen, GlobalIPv6Address: addrText(at.IP6), IPv6Gateway: addrText(at.Gateway6),
				GlobalIPv6PrefixLen: at.PrefixLen6, Aliases: c.Aliases, Interface: at.IfName, HostVeth: at.HostVeth}
			ns.Networks[at.Network] = ep
			if i == 0 {
				ns.IPAddress, ns.Gateway, ns.MacAddress, ns.IPPrefixLen = ep.IPAddress, ep.Gateway, ep.MacAddress, ep.IPPrefixLen
				ns.GlobalIPv6Address, ns.IPv6Gateway, ns.GlobalIPv6PrefixLen = ep.GlobalIPv6Address, ep.IPv6Gateway, ep.GlobalIPv6PrefixLen
			}
		}
		if u := c.UserNet; u != nil {
			ns.IPAddress, ns.Gateway, ns.GlobalIPv6Address, ns.IPv6Gateway = addrText(u.IP), addrText(u.Gateway), addrText(u.IP6), addrText(u.Gateway6)
		}
	}
	if info.Stack != nil {
		d.Stack = info.Stack
	}
	for _, e := range info.Firewall {
		d.Firewall = append(d.Firewall, fmt.Sprint(e))
	}
	return d
}

// addrText is an address as Docker's inspect writes it: "" when there is none (an
// IPv4 field of an IPv6-only network's container).
func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func hostIP(p network.Port) string {
	if p.HostIP.IsValid() && !p.HostIP.IsUnspecified() {
		return p.HostIP.String()
	}
	return "0.0.0.0"
}

// networkDoc is a network as `network inspect --format TEMPLATE` sees it: Docker's
// fields (Name, Id, Created, Scope, Driver, EnableIPv6, IPAM.Config, Internal,
// Containers, Labels), then ctnet's own.
type networkDoc struct {
	Name, Id, ID, Created, Scope, Driver string
	EnableIPv6, Internal                 bool
	IPAM                                 struct {
		Driver string
		Config []struct{ Subnet, Gateway string }
	}
	Containers map[string]networkEndpointDoc
	Labels     map[string]string
	// ctnet's own.
	Bridge     string
	MTU        int
	Masquerade bool
	Firewall   []string
}

type networkEndpointDoc struct {
	Name, MacAddress, IPv4Address, IPv6Address string
	// ctnet's own.
	Interface, HostVeth string
}

func newNetworkDoc(info *network.NetworkInspect) networkDoc {
	d := networkDoc{Name: info.Name, Id: info.ID, ID: info.ID, Created: info.Created.Format(time.RFC3339Nano), Scope: "local",
		Driver: info.Driver, EnableIPv6: info.Subnet6.IsValid(), Internal: info.Internal, Labels: info.Labels, Bridge: info.Bridge,
		MTU: info.MTU, Masquerade: info.Masquerade}
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	d.IPAM.Driver = "default"
	d.IPAM.Config = []struct{ Subnet, Gateway string }{}
	for _, family := range []struct {
		subnet  netip.Prefix
		gateway netip.Addr
	}{{info.Subnet, info.Gateway}, {info.Subnet6, info.Gateway6}} {
		if family.subnet.IsValid() {
			d.IPAM.Config = append(d.IPAM.Config, struct{ Subnet, Gateway string }{family.subnet.String(), addrText(family.gateway)})
		}
	}
	d.Containers = map[string]networkEndpointDoc{}
	withPrefix := func(ip string, subnet netip.Prefix) string {
		if ip == "" {
			return ""
		}
		return fmt.Sprintf("%s/%d", ip, subnet.Bits())
	}
	for _, m := range info.Containers {
		d.Containers[m.ID] = networkEndpointDoc{Name: m.Name, MacAddress: m.MAC, IPv4Address: withPrefix(m.IP, info.Subnet),
			IPv6Address: withPrefix(m.IP6, info.Subnet6), Interface: m.Interface, HostVeth: m.HostVeth}
	}
	for _, e := range info.Firewall {
		d.Firewall = append(d.Firewall, fmt.Sprint(e))
	}
	return d
}

// inspected is one object `inspect` found: a container or a network.
type inspected struct {
	container *network.ContainerInspect
	network   *network.NetworkInspect
}

func (o inspected) json() any {
	if o.container != nil {
		return o.container
	}
	return o.network
}

func (o inspected) doc() any {
	if o.container != nil {
		return newContainerDoc(o.container)
	}
	return newNetworkDoc(o.network)
}

// inspectObjects finds each name as what kind allows ("" is a container, else a
// network, as Docker's inspect), going on past names it cannot find and failing
// with all of those at the end.
func inspectObjects(m *network.Manager, kind string, names []string) ([]inspected, error) {
	var found []inspected
	var failed []error
	for _, name := range names {
		var err error
		if kind == "" || kind == "container" {
			var c *network.ContainerInspect
			if c, err = m.InspectContainer(name); err == nil {
				found = append(found, inspected{container: c})
				continue
			}
		}
		if (kind == "" && errors.Is(err, network.ErrNotFound)) || kind == "network" {
			var n *network.NetworkInspect
			if n, err = m.InspectNetwork(name); err == nil {
				found = append(found, inspected{network: n})
				continue
			}
			if kind == "" && errors.Is(err, network.ErrNotFound) {
				err = fmt.Errorf("no container or network called %s: %w", name, network.ErrNotFound)
			}
		}
		failed = append(failed, err)
	}
	return found, errors.Join(failed...)
}

// printInspected prints what inspect found: as text, as ctnet's JSON (an array, even
// for one name, as Docker's inspect prints), or through a template, once per object.
func (a *app) printInspected(found []inspected, format string) error {
	switch {
	case format == "json":
		all := make([]any, len(found))
		for i, o := range found {
			all[i] = o.json()
		}
		return writeJSON(a.stdout, all)
	case isTemplate(format):
		docs := make([]any, len(found))
		for i, o := range found {
			docs[i] = o.doc()
		}
		return writeInspectTemplate(a, format, docs)
	}
	for i, o := range found {
		if i > 0 {
			fmt.Fprintln(a.stdout)
		}
		if o.container != nil {
			printContainer(a, o.container)
		} else {
			printNetwork(a, o.network)
		}
	}
	return nil
}

// writeInspectTemplate executes an inspect template once per object; an object's
// kind decides its fields, so the template is checked against each.
func writeInspectTemplate(a *app, format string, docs []any) error {
	tmpl, err := parseInspectTemplate(format)
	if err != nil {
		return err
	}
	w := terminalText(a.stdout)
	for _, d := range docs {
		var b strings.Builder
		if err := tmpl.Execute(&b, d); err != nil {
			return usage("bad --format %q: %v", format, err)
		}
		fmt.Fprintln(w, strings.TrimSuffix(b.String(), "\n"))
	}
	return nil
}
