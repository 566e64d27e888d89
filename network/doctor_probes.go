package network

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
)

// ProbeFindings checks with real probes (Trace) what Doctor can only infer: that
// every running container reaches its gateway on each of its networks, and that
// every published TCP and UDP port reaches its container from the host. A probe
// needs no server: it counts as delivered when it enters the container's (or the
// host's) input hook.
func (m *Manager) ProbeFindings(ctx context.Context) ([]Finding, error) {
	if m.rootless {
		return nil, nil
	}
	containers, err := m.Containers(false)
	if err != nil {
		return nil, err
	}
	var out []Finding
	check := func(spec TraceSpec, ok, bad string) error {
		res, err := m.Trace(ctx, spec)
		if err != nil {
			return err
		}
		cmd := fmt.Sprintf("ctnet trace %s %s", spec.From, spec.To)
		if spec.Proto != "" {
			cmd += " --proto " + spec.Proto
		}
		if res.Delivered {
			out = append(out, Finding{Text: ok})
		} else {
			out = append(out, Finding{Problem: true, Text: bad + ": " + res.Outcome,
				Fix: fmt.Sprintf("`%s` shows each step and the rule that stopped the probe", cmd)})
		}
		return nil
	}
	for _, c := range containers {
		if c.Mode != ModeBridge {
			continue
		}
		for _, a := range c.Attachments {
			// One probe per interface and family, to its gateway; a macvlan
			// interface's gateway is the segment's router, which the host never
			// sees it reach.
			if a.HostVeth == "" {
				continue
			}
			for _, gateway := range []netip.Addr{a.Gateway, a.Gateway6} {
				if !gateway.IsValid() {
					continue
				}
				where := fmt.Sprintf("its gateway %s on network %s", gateway, a.Network)
				if err := check(TraceSpec{From: c.Name, To: gateway.String()},
					fmt.Sprintf("container %s reaches %s", c.Name, where),
					fmt.Sprintf("container %s does not reach %s", c.Name, where)); err != nil {
					return nil, err
				}
			}
		}
		for _, p := range c.Ports {
			if p.Proto != "tcp" && p.Proto != "udp" {
				continue
			}
			addr, ok := probeAddr(c, p)
			if !ok {
				continue
			}
			to := netip.AddrPortFrom(addr, p.HostPort).String()
			what := fmt.Sprintf("published port %s/%s", to, p.Proto)
			inside := c.Name + ":" + strconv.Itoa(int(p.ContainerPort))
			if err := check(TraceSpec{From: "host", To: to, Proto: p.Proto},
				fmt.Sprintf("%s reaches %s from the host", what, inside),
				fmt.Sprintf("%s does not reach %s from the host", what, inside)); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// probeAddr is the host address a probe of published port p reaches it at: its own
// host address, else 127.0.0.1 over IPv4, and over IPv6 (which cannot publish on ::1)
// the gateway of the container's network, an address of the host's own.
func probeAddr(c *Container, p Port) (netip.Addr, bool) {
	switch {
	case p.HostIP.IsValid() && !p.HostIP.IsUnspecified():
		return p.HostIP, true
	case p.ContainerIP.Is4():
		return netip.MustParseAddr("127.0.0.1"), true
	}
	for _, a := range c.Attachments {
		if a.IP6 == p.ContainerIP && a.Gateway6.IsValid() {
			return a.Gateway6, true
		}
	}
	return netip.Addr{}, false
}
