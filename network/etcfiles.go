package network

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ctnet/ctnet/internal/embeddns"
	"github.com/ctnet/ctnet/internal/nameconf"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
)

// etcFiles are the files ctnet writes into a container's runtime directory and
// mounts over the host's inside the container's own mount namespace, as Docker
// does: the host's resolv.conf may name a resolver on the host's loopback, which a
// container cannot reach, and a container's hosts file and hostname name it.
var etcFiles = []struct{ name, target string }{
	{"resolv.conf", "/etc/resolv.conf"},
	{"hosts", "/etc/hosts"},
	{"hostname", "/etc/hostname"},
}

// EtcFile is a file ctnet wrote for a container and the path it covers inside it.
type EtcFile struct{ Source, Target string }

// PinDirs are the directories of namespace pins a container's mount namespace
// drops: ctnet's own and iproute2's.
func (m *Manager) PinDirs() []string { return []string{m.netnsDir(), netns.SystemPinDir} }

// hostname is a container's hostname: the one asked for, else its short ID, as
// Docker's.
func hostname(asked, id string) string {
	if asked != "" {
		return asked
	}
	return shortID(id)
}

// EtcFiles lists the files ctnet wrote for c and the host paths they cover inside
// it; none for host mode, an attached namespace, or a container made before ctnet
// wrote them. A container in container:NAME mode uses NAME's.
func EtcFiles(c *Container) []EtcFile {
	if c.Mode == ModeHost || c.Mode == ModeContainer || c.Attached {
		return nil
	}
	var files []EtcFile
	for _, f := range etcFiles {
		source := filepath.Join(c.RuntimeDir, f.name)
		if _, err := os.Stat(source); err == nil {
			files = append(files, EtcFile{Source: source, Target: f.target})
		}
	}
	return files
}

// hasEtcFiles reports whether c gets files of its own: not in host mode, where it
// uses the host's; not in container:NAME mode, where it uses NAME's; not when
// attached, with no process to give them to.
func hasEtcFiles(c *store.Container) bool {
	return c.Mode != store.ModeHost && c.Mode != store.ModeContainer && !c.Attached
}

// checkNameOptionsApply refuses --dns and --add-host where the container would
// have no files of its own for them to go into; the spec alone says so.
func checkNameOptionsApply(spec ContainerSpec) error {
	if len(spec.DNS)+len(spec.ExtraHosts) == 0 {
		return nil
	}
	switch {
	case spec.NetNS != "":
		return invalid("--dns and --add-host configure a container's own files: attach starts no process to give them to")
	case spec.Network.Kind == ModeHost:
		return invalid("--dns and --add-host have no effect with --network host: the container uses the host's files")
	case spec.Network.Kind == ModeContainer:
		return invalid("--dns and --add-host have no effect with --network container:NAME: the container uses NAME's files")
	}
	return nil
}

// parseDNS reads --dns: an IP address, or IP:PORT for the forwarder of an
// unprivileged user's network (port 0 when none is given).
func parseDNS(specs []string) ([]netip.AddrPort, error) {
	var dns []netip.AddrPort
	for _, d := range specs {
		ap, err := netip.ParseAddrPort(d)
		if err != nil {
			var a netip.Addr
			if a, err = netip.ParseAddr(d); err == nil {
				ap = netip.AddrPortFrom(a, 0)
			}
		} else if ap.Port() == 0 {
			err = fmt.Errorf("port 0")
		}
		if err != nil || ap.Addr().Zone() != "" {
			return nil, badField("DNS", d, "want an IP address (unprivileged users may add :PORT)")
		}
		dns = append(dns, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return dns, nil
}

// resolvConfServers are --dns as a resolv.conf can name them: without ports.
func resolvConfServers(dns []netip.AddrPort) ([]netip.Addr, error) {
	var servers []netip.Addr
	for _, d := range dns {
		if d.Port() != 0 {
			return nil, badField("DNS", d.String(), "a resolv.conf takes an address without a port")
		}
		servers = append(servers, d.Addr())
	}
	return servers, nil
}

func parseExtraHosts(specs []string) ([]nameconf.Host, error) {
	var extra []nameconf.Host
	for _, h := range specs {
		name, ip, ok := strings.Cut(h, ":")
		a, err := netip.ParseAddr(ip)
		if !ok || err != nil || a.Zone() != "" {
			return nil, badField("ExtraHosts", h, "want NAME:IP, e.g. db.internal:192.0.2.5")
		}
		if err := hostnameRule(name); err != nil {
			return nil, &FieldError{Field: "ExtraHosts", Value: h, Err: err}
		}
		extra = append(extra, nameconf.Host{Name: name, Addr: a.Unmap()})
	}
	return extra, nil
}

// writeEtcFiles writes c's resolv.conf, hosts and hostname into its runtime
// directory. Modes that use someone else's files get none.
func (m *Manager) writeEtcFiles(o *op, c *store.Container, dns []netip.Addr, extra []nameconf.Host) error {
	if !hasEtcFiles(c) {
		return nil
	}
	var resolver nameconf.Resolver
	var addrs []netip.Addr
	for _, a := range c.Attachments {
		for _, ip := range []netip.Addr{a.IP, a.IP6} {
			if ip.IsValid() {
				addrs = append(addrs, ip)
			}
		}
	}
	switch {
	case c.Mode == store.ModeUserNet:
		// The forwarder at 10.0.2.3 runs on the host, where even loopback resolvers
		// serve; fd00::3 is the same forwarder, for a container that asks over IPv6.
		host, err := nameconf.ReadResolvConf(nameconf.HostResolvConf)
		if err != nil {
			return err
		}
		resolver = nameconf.Resolver{Nameservers: []netip.Addr{userNetAddrs(c.UserNet.Subnet).DNS, userNetIPv6.DNS}, Other: host.Other}
		addrs = append(addrs, UserNetGuest(c.UserNet.Subnet))
	case c.Mode == store.ModeBridge && !m.rootless && c.Attachments[0].Network != DefaultNetwork:
		// Names go to the container's embedded DNS server, which forwards the rest
		// from the host's namespace, where even loopback resolvers answer. As with
		// Docker's and Podman's, the default network has none: its containers skip the
		// server's cost (its sockets hold the namespace about one RCU grace period
		// past the container's end, which rm waits for).
		host, err := nameconf.ReadResolvConf(nameconf.HostResolvConf)
		if err != nil {
			return err
		}
		resolver = nameconf.Resolver{Nameservers: []netip.Addr{embeddns.Address},
			Other: append(slices.Clone(host.Other), "options ndots:0")}
		// Recorded even on an internal network: the server forwards to them while
		// the container is on a network with a way out, which connect may add later.
		c.EmbeddedDNS = true
		if len(dns) == 0 {
			dns = host.Nameservers
		}
		for _, d := range dns {
			c.Resolvers = append(c.Resolvers, netip.AddrPortFrom(d, 53))
		}
	default:
		var err error
		if resolver, err = nameconf.ForContainer(dns, nameconf.HostResolvConf, nameconf.SystemdUpstream); err != nil {
			return err
		}
		if c.Mode == store.ModeBridge {
			resolver.Nameservers = reachableFamilies(resolver.Nameservers, addrs)
		}
	}
	contents := map[string][]byte{
		"resolv.conf": resolver.Render(),
		"hosts":       nameconf.Hosts(hostname(c.Hostname, c.ID), addrs, extra),
		"hostname":    []byte(hostname(c.Hostname, c.ID) + "\n"),
	}
	o.journal.Comment("write the container's resolv.conf, hosts and hostname into " + c.RuntimeDir)
	if o.dryRun() {
		return nil
	}
	if err := os.MkdirAll(c.RuntimeDir, 0o700); err != nil {
		return fmt.Errorf("create runtime directory: %w", err)
	}
	o.undo.push("write the container's resolv.conf, hosts and hostname", func() error { return os.RemoveAll(c.RuntimeDir) })
	for _, f := range etcFiles {
		// Readable by all: the container's unprivileged users resolve names too. The
		// runtime directory (0700) keeps them from anyone else on the host.
		if err := os.WriteFile(filepath.Join(c.RuntimeDir, f.name), contents[f.name], 0o644); err != nil {
			return fmt.Errorf("write the container's %s: %w", f.name, err)
		}
	}
	return nil
}

// reachableFamilies keeps the nameservers of a family the container has an address
// of: an IPv6 resolver is no use to a container without IPv6, nor an IPv4 one to an
// IPv6-only container. If that leaves none, Docker's fallbacks of those families.
func reachableFamilies(servers, addrs []netip.Addr) []netip.Addr {
	var has4, has6 bool
	for _, a := range addrs {
		has4, has6 = has4 || a.Is4(), has6 || a.Is6()
	}
	keep := func(list []netip.Addr) []netip.Addr {
		var out []netip.Addr
		for _, s := range list {
			if s.Is4() && has4 || s.Is6() && has6 {
				out = append(out, s)
			}
		}
		return out
	}
	if out := keep(servers); len(out) > 0 || len(servers) == 0 {
		return out
	}
	return keep(append(slices.Clone(nameconf.FallbackNameservers), nameconf.FallbackNameservers6...))
}
