// Package nameconf renders the files a container's resolver reads — resolv.conf,
// hosts and hostname — as Docker gives every container its own: the host's
// resolv.conf is no use inside a namespace when it points at a resolver on the
// host's loopback (systemd-resolved's 127.0.0.53), and a container's hosts file
// names the container.
package nameconf

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Paths of the host's resolver configuration.
const (
	HostResolvConf = "/etc/resolv.conf"
	// SystemdUpstream lists the servers systemd-resolved itself asks, for hosts whose
	// resolv.conf names only its stub on the loopback.
	SystemdUpstream = "/run/systemd/resolve/resolv.conf"
)

// FallbackNameservers are Docker's, for a host whose only resolvers are on its own
// loopback and who says nothing of what they forward to.
var FallbackNameservers = []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("8.8.4.4")}

// FallbackNameservers6 are Docker's IPv6 fallbacks, for IPv6-only containers.
var FallbackNameservers6 = []netip.Addr{netip.MustParseAddr("2001:4860:4860::8888"), netip.MustParseAddr("2001:4860:4860::8844")}

// Resolver is what a resolv.conf says.
type Resolver struct {
	Nameservers []netip.Addr
	Other       []string // search, domain, options lines, as written
}

// ReadResolvConf parses a resolv.conf; a missing file is an empty configuration,
// as the C library reads it.
func ReadResolvConf(path string) (Resolver, error) {
	var r Resolver
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("read resolvers: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			// A zone ("fe80::1%eth0") is kept: a host socket can use it.
			if addr, err := netip.ParseAddr(fields[1]); err == nil {
				r.Nameservers = append(r.Nameservers, addr.Unmap())
			}
		case "search", "domain", "options":
			r.Other = append(r.Other, line)
		}
	}
	return r, sc.Err()
}

// ForContainer is the resolver configuration of a container with its own network
// namespace: the given nameservers if any, else the host's that a container can
// reach — loopback ones cannot be, nor IPv6 link-local ones (fe80::1%uplink0, as a
// router's advertisement gives them), which are on a link of the host's, not the
// container's — falling back to what systemd-resolved forwards to and then to
// Docker's public ones. Search domains and options are the host's.
func ForContainer(dns []netip.Addr, hostPath, upstreamPath string) (Resolver, error) {
	host, err := ReadResolvConf(hostPath)
	if err != nil {
		return Resolver{}, err
	}
	r := Resolver{Nameservers: dns, Other: host.Other}
	if len(r.Nameservers) > 0 {
		return r, nil
	}
	r.Nameservers = reachable(host.Nameservers)
	if len(r.Nameservers) > 0 || len(host.Nameservers) == 0 {
		return r, nil
	}
	if upstream, err := ReadResolvConf(upstreamPath); err == nil {
		r.Nameservers = reachable(upstream.Nameservers)
	}
	if len(r.Nameservers) == 0 {
		r.Nameservers = FallbackNameservers
	}
	return r, nil
}

func reachable(servers []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, s := range servers {
		// The host forwards to 169.254.0.0/16 (a cloud's resolver, such as AWS's
		// 169.254.169.253), never to fe80::/10.
		if !s.IsLoopback() && !(s.Is6() && s.IsLinkLocalUnicast()) {
			out = append(out, s)
		}
	}
	return out
}

// Render writes r as a resolv.conf.
func (r Resolver) Render() []byte {
	var b bytes.Buffer
	b.WriteString("# written by ctnet for this container\n")
	for _, s := range r.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	for _, line := range r.Other {
		b.WriteString(line + "\n")
	}
	return b.Bytes()
}

// Host is one line of a hosts file.
type Host struct {
	Name string
	Addr netip.Addr
}

// Hosts renders a container's hosts file: loopback names, extra entries, and the
// container's hostname at each of its addresses.
func Hosts(hostname string, addrs []netip.Addr, extra []Host) []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
	for _, h := range extra {
		fmt.Fprintf(&b, "%s\t%s\n", h.Addr, h.Name)
	}
	for _, a := range addrs {
		fmt.Fprintf(&b, "%s\t%s\n", a, hostname)
	}
	return b.Bytes()
}
