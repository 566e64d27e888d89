package main

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ctnet/ctnet/network"
)

// filters are Docker's --filter KEY=VALUE: the values given for one key are
// alternatives, but for label, where each must hold, and every key given must match.
type filters map[string][]string

func parseFilters(args []string, keys ...string) (filters, error) {
	f := filters{}
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		if !ok || !slices.Contains(keys, k) {
			return nil, usage("invalid filter %q: use KEY=VALUE with KEY one of %s", arg, strings.Join(keys, ", "))
		}
		f[k] = append(f[k], v)
	}
	return f, nil
}

func (f filters) has(key string) bool { _, ok := f[key]; return ok }

// match says whether one of key's values matches, true when key is not filtered on.
func (f filters) match(key string, matches func(value string) bool) bool {
	values, ok := f[key]
	if !ok {
		return true
	}
	return slices.ContainsFunc(values, matches)
}

// hasLabels is Docker's label filter: labels hold every label=KEY and label=KEY=VALUE
// given.
func (f filters) hasLabels(labels map[string]string) bool {
	return !slices.ContainsFunc(f["label"], func(v string) bool { return !hasLabel(labels, v) })
}

// nameMatches is Docker's name filter: a regular expression that matches anywhere in
// the name (so a plain word matches names containing it).
func nameMatches(pattern, name string) bool {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return strings.Contains(name, pattern)
	}
	return re.MatchString(name)
}

// dockerStates are the states Docker's status filter takes; ctnet's containers are
// only ever created, running or exited.
var dockerStates = []string{"created", "restarting", "running", "removing", "paused", "exited", "dead"}

var containerFilterKeys = []string{"id", "name", "label", "status", "network", "exited"}

// checkContainerFilters refuses values that could never be meant, as Docker does.
func checkContainerFilters(f filters) error {
	for _, s := range f["status"] {
		if !slices.Contains(dockerStates, s) {
			return usage("invalid filter 'status=%s': use one of %s", s, strings.Join(dockerStates, ", "))
		}
	}
	for _, code := range f["exited"] {
		if _, err := strconv.Atoi(code); err != nil {
			return usage("invalid filter 'exited=%s': use an exit status", code)
		}
	}
	return nil
}

func filterContainers(cs []*network.Container, f filters) []*network.Container {
	var out []*network.Container
	for _, c := range cs {
		if f.match("id", func(v string) bool { return v != "" && strings.HasPrefix(c.ID, v) }) &&
			// Docker's names begin with a slash, which its filter may name: ^/web$.
			f.match("name", func(v string) bool { return nameMatches(v, c.Name) || nameMatches(v, "/"+c.Name) }) &&
			f.hasLabels(c.Labels) &&
			f.match("status", func(v string) bool { return v == c.State }) &&
			f.match("exited", func(v string) bool { return c.State == network.StateExited && v == strconv.Itoa(c.ExitCode) }) &&
			f.match("network", func(v string) bool { return onNetwork(c, v) }) {
			out = append(out, c)
		}
	}
	return out
}

// onNetwork says whether c is on the network called or with the ID (or ID prefix)
// ref, or in the mode (host, none) called ref.
func onNetwork(c *network.Container, ref string) bool {
	if c.Mode != network.ModeBridge {
		return string(c.Mode) == ref
	}
	return slices.ContainsFunc(c.Attachments, func(at network.Attachment) bool {
		return at.Network == ref || ref != "" && strings.HasPrefix(at.NetworkID, ref)
	})
}

var networkFilterKeys = []string{"id", "name", "label", "driver", "type", "scope", "dangling"}

// checkNetworkFilters refuses values that could never be meant, as Docker does.
func checkNetworkFilters(f filters) error {
	for _, s := range f["scope"] {
		if !slices.Contains([]string{"local", "global", "swarm"}, s) {
			return usage("invalid filter 'scope=%s': use local, global or swarm", s)
		}
	}
	for _, d := range f["dangling"] {
		if _, err := strconv.ParseBool(d); err != nil {
			return usage("invalid filter 'dangling=%s': use true or false", d)
		}
	}
	return nil
}

// filterNetworks keeps the networks f matches; used are the IDs of those a running
// container is on, which dangling=true leaves out with the default network, as
// Docker's (what network prune removes).
func filterNetworks(ns []*network.Network, f filters, used map[string]bool) []*network.Network {
	var out []*network.Network
	for _, n := range ns {
		if f.match("id", func(v string) bool { return v != "" && strings.HasPrefix(n.ID, v) }) &&
			f.match("name", func(v string) bool { return nameMatches(v, n.Name) }) &&
			f.match("driver", func(v string) bool { return v == n.Driver }) &&
			f.match("type", func(v string) bool { return v == networkType(n) }) &&
			f.match("scope", func(v string) bool { return v == "local" }) &&
			f.match("dangling", func(v string) bool {
				dangling, _ := strconv.ParseBool(v)
				return dangling == (networkType(n) == "custom" && !used[n.ID])
			}) &&
			f.hasLabels(n.Labels) {
			out = append(out, n)
		}
	}
	return out
}

// networkType is Docker's: the default network is built in, the rest custom.
func networkType(n *network.Network) string {
	if n.Name == network.DefaultNetwork {
		return "builtin"
	}
	return "custom"
}

// hasLabel matches a label filter: KEY, or KEY=VALUE.
func hasLabel(labels map[string]string, filter string) bool {
	k, v, withValue := strings.Cut(filter, "=")
	got, ok := labels[k]
	return ok && (!withValue || got == v)
}

func labelsString(labels map[string]string) string {
	var kv []string
	for k, v := range labels {
		kv = append(kv, fmt.Sprintf("%s=%s", k, v))
	}
	slices.Sort(kv)
	return strings.Join(kv, ",")
}

// portKey is port's PRIVATE_PORT[/PROTO] (tcp when not given).
type portKey struct {
	port  uint16
	proto string
}

func (k portKey) String() string { return fmt.Sprintf("%d/%s", k.port, k.proto) }

func parsePortKey(s string) (portKey, error) {
	portText, proto, _ := strings.Cut(s, "/")
	if proto == "" {
		proto = "tcp"
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 || !slices.Contains([]string{"tcp", "udp", "sctp"}, proto) {
		return portKey{}, usage("bad port %q: use PRIVATE_PORT[/tcp|/udp|/sctp]", s)
	}
	return portKey{uint16(port), proto}, nil
}

// of are the bindings of the container's port k.
func (k portKey) of(ports []network.Port) []network.Port {
	var out []network.Port
	for _, p := range ports {
		if p.ContainerPort == k.port && p.Proto == k.proto {
			out = append(out, p)
		}
	}
	return out
}
