package network

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

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

// Hostname is a container's hostname: --hostname, else its short ID, as Docker's.
func Hostname(c *store.Container) string {
	if c.Hostname != "" {
		return c.Hostname
	}
	return shortID(c.ID)
}

// EtcFiles lists the files that cover the host's inside c: its own, or those of the
// container whose namespace it shares; none for host mode or an attached namespace.
func (m *Manager) EtcFiles(c *store.Container) ([]EtcFile, error) {
	dir := c.RuntimeDir
	switch {
	case c.Mode == store.ModeHost || c.Attached:
		return nil, nil
	case c.Mode == store.ModeContainer:
		owner, err := m.Container(c.SharedWith)
		if err != nil {
			return nil, err
		}
		dir = owner.RuntimeDir
	}
	var files []EtcFile
	for _, f := range etcFiles {
		source := filepath.Join(dir, f.name)
		// Containers made before ctnet wrote these files have none.
		if _, err := os.Stat(source); err == nil {
			files = append(files, EtcFile{Source: source, Target: f.target})
		}
	}
	return files, nil
}

// checkNameOptionsApply refuses --dns and --add-host where the container has no
// files of its own for them to go into.
func checkNameOptionsApply(c *store.Container, spec ContainerSpec) error {
	if len(spec.DNS)+len(spec.ExtraHosts) == 0 {
		return nil
	}
	switch {
	case spec.NetNS != "":
		return invalid("--dns and --add-host configure a container's own files: attach starts no process to give them to")
	case c.Mode == store.ModeHost:
		return invalid("--dns and --add-host have no effect with --network host: the container uses the host's files")
	case c.Mode == store.ModeContainer:
		return invalid("--dns and --add-host have no effect with --network container:NAME: the container uses NAME's files")
	}
	return nil
}

// parseDNS reads --dns for a resolv.conf, which cannot name a port; a user-mode
// network's forwarder can (withPort), and parseUserNet reads those.
func parseDNS(specs []string, withPort bool) ([]netip.Addr, error) {
	var dns []netip.Addr
	for _, d := range specs {
		if _, err := netip.ParseAddrPort(d); err == nil {
			if withPort {
				continue
			}
			return nil, invalid("bad --dns %q: a resolv.conf takes an address without a port", printable(d))
		}
		a, err := netip.ParseAddr(d)
		if err != nil || a.Zone() != "" {
			return nil, invalid("bad --dns %q: want an IP address", printable(d))
		}
		dns = append(dns, a.Unmap())
	}
	return dns, nil
}

func parseExtraHosts(specs []string) ([]nameconf.Host, error) {
	var extra []nameconf.Host
	for _, h := range specs {
		name, ip, ok := strings.Cut(h, ":")
		a, err := netip.ParseAddr(ip)
		if !ok || err != nil || a.Zone() != "" {
			return nil, invalid("bad --add-host %q: want NAME:IP, e.g. db.internal:192.0.2.5", printable(h))
		}
		if err := checkHostname(name); err != nil {
			return nil, invalid("bad --add-host %q: %v", printable(h), err)
		}
		extra = append(extra, nameconf.Host{Name: name, Addr: a.Unmap()})
	}
	return extra, nil
}

// writeEtcFiles writes c's resolv.conf, hosts and hostname into its runtime
// directory. Modes that use someone else's files get none.
func (m *Manager) writeEtcFiles(o *op, c *store.Container, spec ContainerSpec) error {
	if err := checkNameOptionsApply(c, spec); err != nil || c.Mode == store.ModeHost || c.Mode == store.ModeContainer || c.Attached {
		return err
	}
	extra, err := parseExtraHosts(spec.ExtraHosts)
	if err != nil {
		return err
	}
	var resolver nameconf.Resolver
	var addrs []netip.Addr
	if c.Mode == store.ModeUserNet {
		// The forwarder at 10.0.2.3 runs on the host, where even loopback resolvers serve.
		host, err := nameconf.ReadResolvConf(nameconf.HostResolvConf)
		if err != nil {
			return err
		}
		resolver = nameconf.Resolver{Nameservers: []netip.Addr{UserNetDNS(c.UserNet.Subnet)}, Other: host.Other}
		addrs = append(addrs, UserNetGuest(c.UserNet.Subnet))
	} else {
		dns, err := parseDNS(spec.DNS, false)
		if err != nil {
			return err
		}
		if resolver, err = nameconf.ForContainer(dns, nameconf.HostResolvConf, nameconf.SystemdUpstream); err != nil {
			return err
		}
		for _, a := range c.Attachments {
			addrs = append(addrs, a.IP)
		}
	}
	contents := map[string][]byte{
		"resolv.conf": resolver.Render(),
		"hosts":       nameconf.Hosts(Hostname(c), addrs, extra),
		"hostname":    []byte(Hostname(c) + "\n"),
	}
	if err := os.MkdirAll(c.RuntimeDir, 0o700); err != nil {
		return fmt.Errorf("create runtime directory: %w", err)
	}
	o.undo.did("write the container's resolv.conf, hosts and hostname", func() error { return os.RemoveAll(c.RuntimeDir) })
	for _, f := range etcFiles {
		// Readable by all: the container's unprivileged users resolve names too. The
		// runtime directory (0700) keeps them from anyone else on the host.
		if err := os.WriteFile(filepath.Join(c.RuntimeDir, f.name), contents[f.name], 0o644); err != nil {
			return fmt.Errorf("write the container's %s: %w", f.name, err)
		}
	}
	return nil
}
