package network

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ctnet/ctnet/ipam"
	"github.com/ctnet/ctnet/link"
)

// validName is Docker's name alphabet, [a-zA-Z0-9][a-zA-Z0-9_.-]*: names become file
// names, map keys and parts of interface aliases, so one conservative alphabet serves
// all. A loop rather than a regexp because compiling one costs every CLI start 80 µs.
func validName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return name != ""
}

const maxNameLen = 64

func checkName(kind, name string) error {
	switch {
	case name == "":
		return invalid("%s name is empty: use letters, digits, '_', '.' and '-', starting with a letter or digit", kind)
	case len(name) > maxNameLen:
		return invalid("%s name %q is too long: at most %d characters", kind, name, maxNameLen)
	case !validName(name):
		return invalid("bad %s name %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", kind, printable(name))
	}
	return nil
}

func printable(s string) string {
	if !utf8.ValidString(s) {
		return fmt.Sprintf("%x", s)
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// isModeName reports whether a --network value names a mode rather than a network.
func isModeName(s string) bool {
	return s != "" && ParseMode(s).Kind != ModeBridge
}

// ParseLabels turns k=v strings into a map.
func ParseLabels(items []string) (map[string]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok {
			return nil, invalid("bad label %q: use key=value", printable(it))
		}
		out[k] = v
	}
	if err := checkLabels(out); err != nil {
		return nil, err
	}
	return out, nil
}

// checkLabels refuses keys that could not be shown as they are (labels are printed
// in tables, where a control character would rewrite the terminal) and values that
// are not text.
func checkLabels(labels map[string]string) error {
	for k, v := range labels {
		if k == "" || len(k) > 256 || !utf8.ValidString(k) || strings.ContainsRune(k, '=') ||
			strings.IndexFunc(k, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return invalid("bad label key %q: use 1 to 256 bytes of printable characters without '='", printable(k))
		}
		if len(v) > 4096 || strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
			return invalid("bad value for label %q: use at most 4096 bytes of valid UTF-8 without NUL", printable(k))
		}
	}
	return nil
}

// check says why p is not a spec ParsePort could have returned, or nil. A spec that
// did not come from ParsePort — the detached supervisor decodes its specs from JSON —
// must meet the same invariants before ports are allocated from it: a range that
// ends before it starts would wrap around to 65536 ports.
func (p PortSpec) check() error {
	bad := func(why string) error {
		return badField("Ports", p.String(), "%s (use [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp|/sctp], e.g. 8080:80)", why)
	}
	cLen, hostLen := int(p.CPEnd)-int(p.ContainerPort), int(p.HostPortEnd)-int(p.HostPort)
	switch {
	case p.Proto != "tcp" && p.Proto != "udp" && p.Proto != "sctp":
		return bad("protocol must be tcp, udp or sctp")
	case p.HostIP.Is4In6() || p.HostIP.Zone() != "":
		return bad("host address must be an IPv4 address, or an IPv6 address in brackets")
	case p.ContainerPort == 0:
		return bad("container port must be from 1 to 65535")
	case cLen < 0:
		return bad("the container range ends before it starts")
	case p.HostPort == 0 && p.HostPortEnd != 0:
		return bad("a host range needs its first port")
	case p.HostPort != 0 && hostLen < 0:
		return bad("the host range ends before it starts")
	case p.HostPort != 0 && cLen != 0 && hostLen != cLen:
		return bad("the host and container ranges differ in length")
	}
	return nil
}

// checkSpec says what is wrong with a ContainerSpec on its own, before anything is
// looked up: the detached supervisor reads its spec as JSON from stdin, so the spec
// may not have passed the command line's parsers.
func checkSpec(spec ContainerSpec) error {
	if spec.Name != "" {
		if err := checkName("container", spec.Name); err != nil {
			return err
		}
	}
	if spec.Hostname != "" {
		if err := checkHostname(spec.Hostname); err != nil {
			return err
		}
	}
	if err := checkLabels(spec.Labels); err != nil {
		return err
	}
	switch mode := spec.Network; mode.Kind {
	case "", ModeHost, ModeNone, ModeUserNet:
	case ModeContainer:
		if err := checkName("container", mode.Container); err != nil {
			return &FieldError{Field: "Network", Value: mode.String(), Err: err}
		}
	case ModeBridge:
		if mode.Network != "" {
			if err := checkName("network", mode.Network); err != nil {
				return err
			}
		}
	default:
		return badField("Network", string(mode.Kind), "use the mode bridge, host, none, container or usernet")
	}
	if spec.IP != "" {
		if _, err := ipam.ParseAddr("address", spec.IP); err != nil {
			return &FieldError{Field: "IP", Value: spec.IP, Err: err}
		}
	}
	if spec.MAC != "" {
		if _, err := parseMAC(spec.MAC); err != nil {
			return err
		}
	}
	if spec.IP6 != "" {
		if _, err := ipam.ParseAddr6("address", spec.IP6); err != nil {
			return &FieldError{Field: "IP6", Value: spec.IP6, Err: err}
		}
	}
	if spec.IfName != "" {
		if err := checkIfName(spec.IfName); err != nil {
			return err
		}
		if k := spec.Network.Kind; k != "" && k != ModeBridge {
			return invalid("--ifname names the interface on a ctnet network: it has no effect with --network %s", spec.Network)
		}
	}
	if strings.ContainsRune(spec.NetNS, 0) {
		return badField("NetNS", spec.NetNS, "use the path of a network namespace file")
	}
	for _, p := range spec.Ports {
		if err := p.check(); err != nil {
			return err
		}
	}
	if err := checkBandwidth(spec.Bandwidth); err != nil {
		return err
	}
	if !spec.UserNet.isZero() {
		if _, err := parseUserNet(spec.UserNet, nil); err != nil {
			return err
		}
	}
	if err := checkAliases(spec); err != nil {
		return err
	}
	if err := checkNameOptionsApply(spec); err != nil {
		return err
	}
	// A port is for the user-mode forwarder only; create knows which this is.
	if _, err := parseDNS(spec.DNS); err != nil {
		return err
	}
	_, err := parseExtraHosts(spec.ExtraHosts)
	return err
}

// checkIfName checks a container interface name asked for: one the kernel takes, and
// not loopback's.
func checkIfName(name string) error {
	if err := link.CheckName(name); err != nil {
		return &FieldError{Field: "IfName", Value: name, Err: err}
	}
	if name == "lo" {
		return badField("IfName", name, "that is the loopback interface; use another name, e.g. eth0")
	}
	return nil
}

// checkAliases checks --network-alias: DNS names, for a container that will have a
// network with an embedded DNS server (one the user created) to be found on.
func checkAliases(spec ContainerSpec) error {
	if len(spec.Aliases) == 0 {
		return nil
	}
	for _, a := range spec.Aliases {
		if err := hostnameRule(a); err != nil {
			return &FieldError{Field: "Aliases", Value: a, Err: err}
		}
	}
	switch {
	case spec.NetNS != "":
		return invalid("--network-alias is answered by a container's embedded DNS server: attach starts none")
	case spec.Network.Kind != "" && spec.Network.Kind != ModeBridge:
		return invalid("--network-alias needs a network: it has no effect with --network %s", spec.Network)
	case spec.Network.Network == "" || spec.Network.Network == DefaultNetwork:
		return invalid("--network-alias has no effect on the default network, which has no embedded DNS server: use a network you created (ctnet network create)")
	}
	return nil
}
