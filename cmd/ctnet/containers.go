package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/network"
)

func (a *app) psCommand() *cobra.Command {
	var all, quiet, latest, noTrunc bool
	var last int
	var format string
	var filterArgs []string
	cmd := &cobra.Command{
		Use:   "ps [-a] [-q]",
		Short: "List containers",
		Example: `  ctnet ps -a --filter status=exited --filter name=web
  ctnet ps --filter label=env=test --format '{{.Names}} {{.Label "env"}}'
  ctnet ps --format 'table {{.Names}}\t{{.Status}}\t{{.Networks}}'
  ctnet ps -l -q`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			filter, err := parseFilters(filterArgs, containerFilterKeys...)
			if err != nil {
				return err
			}
			if err := checkContainerFilters(filter); err != nil {
				return err
			}
			if latest {
				last = 1
			}
			// As Docker's: asking for the last created, or for a status, looks at
			// every container.
			all = all || last >= 0 || filter.has("status") || filter.has("exited")
			return a.withManager(func(m *network.Manager) error {
				cs, err := m.Containers(all)
				if err != nil {
					return err
				}
				cs = filterContainers(cs, filter)
				if last >= 0 && len(cs) > last {
					cs = cs[:last]
				}
				return a.printContainers(cs, format, quiet, noTrunc)
			})
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show exited containers too")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only container IDs")
	addFormatFlag(cmd, &format)
	cmd.Flags().StringArrayVarP(&filterArgs, "filter", "f", nil, "filter: id=PREFIX, name=REGEXP, label=KEY[=VALUE], status=running|exited|created, network=NAME|ID, exited=CODE (repeatable)")
	cmd.Flags().IntVarP(&last, "last", "n", -1, "show the n last created containers (all states)")
	cmd.Flags().BoolVarP(&latest, "latest", "l", false, "show the last created container (all states)")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate IDs and commands")
	return cmd
}

func (a *app) printContainers(cs []*network.Container, format string, quiet, noTrunc bool) error {
	switch {
	case quiet:
		for _, c := range cs {
			fmt.Fprintln(a.stdout, shortID(c.ID, noTrunc))
		}
		return nil
	case format == "json":
		return writeJSON(a.stdout, cs)
	case isTemplate(format):
		now := time.Now()
		rows := make([]psRow, len(cs))
		for i, c := range cs {
			rows[i] = newPsRow(c, noTrunc, now)
		}
		return writeTemplate(a.stdout, format, rows)
	}
	now := time.Now()
	t := newTable(a.stdout, "CONTAINER ID", "NAME", "CREATED", "STATUS", "NETWORK", "IP", "PORTS", "COMMAND")
	for _, c := range cs {
		r := newPsRow(c, noTrunc, now)
		cmd := command(c)
		if noTrunc {
			cmd = strings.Join(c.Command, " ")
		}
		t.row(shortID(c.ID, noTrunc), c.Name, r.RunningFor, r.Status, networksOf(c), ipsOf(c), portsOf(c.Ports), cmd)
	}
	return t.flush()
}

func status(c *network.Container) string { return statusAt(c, time.Now()) }

// statusAt is Docker's STATUS column as of now: "Up 2 hours", "Exited (0) 3 minutes ago".
func statusAt(c *network.Container, now time.Time) string {
	switch {
	case c.State == network.StateExited:
		code := "?"
		if c.ExitCode >= 0 {
			code = fmt.Sprint(c.ExitCode)
		}
		if c.Finished.IsZero() {
			return fmt.Sprintf("Exited (%s)", code)
		}
		return fmt.Sprintf("Exited (%s) %s ago", code, humanDuration(now.Sub(c.Finished)))
	case c.Attached:
		return "Attached " + humanDuration(now.Sub(c.Created))
	case c.State == network.StateCreated:
		return "Created"
	}
	return "Up " + humanDuration(now.Sub(c.Created))
}

// humanDuration words d as Docker does (go-units' HumanDuration), which users and
// their scripts know: "1 second", "About a minute", "About an hour", "3 days".
func humanDuration(d time.Duration) string {
	seconds := int(d.Seconds())
	minutes := int(d.Minutes())
	hours := int(d.Hours() + 0.5)
	switch {
	case seconds < 1:
		return "Less than a second"
	case seconds == 1:
		return "1 second"
	case seconds < 60:
		return fmt.Sprintf("%d seconds", seconds)
	case minutes == 1:
		return "About a minute"
	case minutes < 60:
		return fmt.Sprintf("%d minutes", minutes)
	case hours == 1:
		return "About an hour"
	case hours < 48:
		return fmt.Sprintf("%d hours", hours)
	case hours < 24*7*2:
		return fmt.Sprintf("%d days", hours/24)
	case hours < 24*30*2:
		return fmt.Sprintf("%d weeks", hours/24/7)
	case hours < 24*365*2:
		return fmt.Sprintf("%d months", hours/24/30)
	}
	return fmt.Sprintf("%d years", int(d.Hours())/24/365)
}

func networksOf(c *network.Container) string {
	if c.Mode != network.ModeBridge {
		if c.Mode == network.ModeContainer {
			return "container:" + c.SharedWith[:12]
		}
		return string(c.Mode)
	}
	var names []string
	for _, at := range c.Attachments {
		names = append(names, at.Network)
	}
	return strings.Join(names, ",")
}

func ipsOf(c *network.Container) string {
	if c.State == network.StateExited {
		return ""
	}
	if u := c.UserNet; u != nil {
		return u.IP.String() + "," + u.IP6.String()
	}
	var ips []string
	for _, at := range c.Attachments {
		for _, ip := range []netip.Addr{at.IP, at.IP6} {
			if ip.IsValid() {
				ips = append(ips, ip.String())
			}
		}
	}
	return strings.Join(ips, ",")
}

func portsOf(ports []network.Port) string {
	var out []string
	for _, p := range ports {
		out = append(out, portString(p))
	}
	return strings.Join(out, ", ")
}

func portString(p network.Port) string {
	return fmt.Sprintf("%s->%d/%s", hostAddrPort(p), p.ContainerPort, p.Proto)
}

// hostAddrPort is where a port is published, an IPv6 address in brackets: [::]:8080
// for every IPv6 address, 0.0.0.0:8080 for every IPv4 one.
func hostAddrPort(p network.Port) string {
	host := p.HostIP
	if !host.IsValid() {
		host = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(host, p.HostPort).String()
}

func command(c *network.Container) string {
	if c.Attached {
		return "(attached " + c.NetNS + ")"
	}
	s := strings.Join(c.Command, " ")
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

func (a *app) stopCommand() *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "stop NAME...",
		Short: "Stop containers: SIGTERM, then SIGKILL after a timeout",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return usage("bad --time %d: use 0 or more seconds", timeout)
			}
			return a.withManager(func(m *network.Manager) error {
				return eachName(a, args, func(name string) error {
					return m.Stop(cmd.Context(), name, time.Duration(timeout)*time.Second)
				})
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait before killing")
	return cmd
}

// eachName runs fn for every name, printing those that succeed, and fails if any did.
func eachName(a *app, names []string, fn func(string) error) error {
	var failed []error
	for _, name := range names {
		if err := fn(name); err != nil {
			failed = append(failed, err)
			continue
		}
		fmt.Fprintln(a.stdout, name)
	}
	if len(failed) == 1 {
		return failed[0]
	}
	return errors.Join(failed...)
}

func (a *app) rmCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] NAME...",
		Short: "Remove containers (and detach attached namespaces)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withManager(func(m *network.Manager) error {
				return eachName(a, args, func(name string) error { return m.Remove(cmd.Context(), name, force) })
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}

func (a *app) inspectCommand() *cobra.Command {
	var format, kind string
	cmd := &cobra.Command{
		Use:   "inspect NAME...",
		Short: "Show containers' networks (links, addresses, routes, neighbours, ports, firewall entries), or networks",
		Long: `Show containers, or networks, by name or ID: as text, as ctnet's JSON (--format json:
an array, as Docker's inspect prints), or through a Go template executed for
each, with Docker's field names where Docker has the field:

  ctnet inspect -f '{{.NetworkSettings.IPAddress}}' web
  ctnet inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' web
  ctnet inspect -f '{{.State.Status}} {{.State.Pid}}' web db
  ctnet inspect -f '{{json .}}' web`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if kind != "" && kind != "container" && kind != "network" {
				return usage("bad --type %q: use container or network", kind)
			}
			if isTemplate(format) {
				if _, err := parseInspectTemplate(format); err != nil {
					return err
				}
			}
			return a.withManager(func(m *network.Manager) error {
				found, err := inspectObjects(m, kind, args)
				if perr := a.printInspected(found, format); perr != nil {
					return perr
				}
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", `output: table (text), json, or a Go template ('{{.State.Pid}}', '{{json .}}')`)
	cmd.Flags().StringVar(&kind, "type", "", "look only for a container or only for a network")
	return cmd
}

func printContainer(a *app, info *network.ContainerInspect) error {
	c := info.Container
	w := terminalText(a.stdout)
	fmt.Fprintf(w, "Container %s (%s)\n", c.Name, c.ID)
	fmt.Fprintf(w, "  state:    %s\n", status(c))
	fmt.Fprintf(w, "  mode:     %s\n", c.Mode)
	if c.NetNS != "" {
		fmt.Fprintf(w, "  netns:    %s\n", c.NetNS)
	}
	if c.Process.Valid() {
		fmt.Fprintf(w, "  pid:      %d\n", c.Process.PID)
	}
	if len(c.Command) > 0 {
		fmt.Fprintf(w, "  command:  %s\n", strings.Join(c.Command, " "))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		fmt.Fprintf(w, "  label:    %s=%s\n", k, c.Labels[k])
	}
	if len(c.Attachments) > 0 {
		fmt.Fprintln(w, "\nNetworks")
		t := newTable(w, "  NETWORK", "INTERFACE", "HOST VETH", "IP", "GATEWAY", "MAC")
		for _, at := range c.Attachments {
			if at.IP.IsValid() {
				t.row("  "+at.Network, at.IfName, at.HostVeth, fmt.Sprintf("%s/%d", at.IP, at.PrefixLen), at.Gateway.String(), at.MAC)
			}
			if at.IP6.IsValid() {
				t.row("  "+at.Network, at.IfName, at.HostVeth, fmt.Sprintf("%s/%d", at.IP6, at.PrefixLen6), at.Gateway6.String(), at.MAC)
			}
		}
		t.flush()
		printBandwidth(w, c.Attachments)
	}
	if u := c.UserNet; u != nil {
		fmt.Fprintln(w, "\nUser-mode network")
		t := newTable(w, "  IP", "GATEWAY")
		t.row("  "+u.IP.String(), u.Gateway.String())
		t.row("  "+u.IP6.String(), u.Gateway6.String())
		t.flush()
	}
	if len(c.Ports) > 0 {
		fmt.Fprintln(w, "\nPorts")
		for _, p := range c.Ports {
			fmt.Fprintf(w, "  %s\n", portString(p))
		}
	}
	if st := info.Stack; st != nil {
		fmt.Fprintln(w, "\nLinks (inside the container)")
		t := newTable(w, "  INDEX", "NAME", "TYPE", "STATE", "MTU", "MAC", "ADDRESSES")
		for _, l := range st.Links {
			t.row(fmt.Sprint("  ", l.Index), l.Name, l.Type, l.State, fmt.Sprint(l.MTU), l.MAC, strings.Join(l.Addresses, " "))
		}
		t.flush()
		fmt.Fprintln(w, "\nRoutes")
		t = newTable(w, "  DESTINATION", "GATEWAY", "DEVICE", "SCOPE", "SOURCE")
		for _, r := range st.Routes {
			t.row("  "+r.Destination, r.Gateway, r.Device, r.Scope, r.Source)
		}
		t.flush()
		fmt.Fprintln(w, "\nNeighbours")
		t = newTable(w, "  ADDRESS", "MAC", "DEVICE", "STATE")
		for _, n := range st.Neighbours {
			t.row("  "+n.Address, n.MAC, n.Device, n.State)
		}
		t.flush()
	}
	if len(info.Firewall) > 0 {
		fmt.Fprintln(w, "\nFirewall entries")
		for _, e := range info.Firewall {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	return nil
}

// printBandwidth lists the limits of the interfaces that have any.
func printBandwidth(w io.Writer, atts []network.Attachment) {
	var t *table
	for _, at := range atts {
		b := at.Bandwidth
		if b == nil {
			continue
		}
		if t == nil {
			fmt.Fprintln(w, "\nBandwidth (as the container sees it)")
			t = newTable(w, "  INTERFACE", "INGRESS", "EGRESS", "IFB")
		}
		t.row("  "+at.IfName, limitString(b.IngressRate, b.IngressBurst), limitString(b.EgressRate, b.EgressBurst), at.IFB)
	}
	if t != nil {
		t.flush()
	}
}

func limitString(rate, burst uint64) string {
	switch {
	case rate == 0:
		return "unlimited"
	case burst == 0:
		return network.FormatRate(rate)
	}
	return fmt.Sprintf("%s burst %s", network.FormatRate(rate), network.FormatRate(burst))
}

func (a *app) portCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "port NAME [PRIVATE_PORT[/PROTO]]",
		Short: "List a container's published ports, or where one of its ports is published",
		Example: `  ctnet port web
  ctnet port web 80/tcp`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var private *portKey
			if len(args) == 2 {
				k, err := parsePortKey(args[1])
				if err != nil {
					return err
				}
				private = &k
			}
			if isTemplate(format) {
				if _, _, err := parseTemplate[network.Port](format); err != nil {
					return err
				}
			}
			return a.withManager(func(m *network.Manager) error {
				c, err := m.Container(args[0])
				if err != nil {
					return err
				}
				ports := c.Ports
				if private != nil {
					ports = private.of(ports)
					if len(ports) == 0 {
						return fmt.Errorf("no public port '%s' published for %s", private, c.Name)
					}
				}
				switch {
				case format == "json":
					return writeJSON(a.stdout, ports)
				case isTemplate(format):
					return writeTemplate(a.stdout, format, ports)
				}
				for _, p := range ports {
					if private != nil {
						fmt.Fprintln(a.stdout, hostAddrPort(p))
						continue
					}
					fmt.Fprintf(a.stdout, "%d/%s -> %s\n", p.ContainerPort, p.Proto, hostAddrPort(p))
				}
				return nil
			})
		},
	}
	addFormatFlag(cmd, &format)
	return cmd
}

func (a *app) attachCommand() *cobra.Command {
	var f runFlags
	var netnsPath, ifName string
	cmd := &cobra.Command{
		Use:   "attach --netns PATH --name NAME [--network NET] [--ip IP] [--ifname IF] [-p PORT]... [--ingress-rate RATE] [--egress-rate RATE]",
		Short: "Connect a network namespace made by something else, as a container without a process",
		Long: `Connect a namespace that another tool made (ip netns add, unshare, a runtime) to a
network: eth0 with an address, a default route, published ports. "ctnet rm NAME" detaches
it again and leaves the namespace itself alone.`,
		Example: "  ip netns add demo && ctnet attach --netns /run/netns/demo --name demo -p 8080:80",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if netnsPath == "" {
				return usage("attach needs --netns PATH: the namespace to connect")
			}
			if f.name == "" {
				return usage("attach needs --name NAME: the name to give the container")
			}
			spec, err := f.spec(nil)
			if err != nil {
				return err
			}
			spec.NetNS, spec.IfName = netnsPath, ifName
			return a.withRootManager("attach", func(m *network.Manager) error {
				c, err := m.Create(cmd.Context(), spec)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, c.ID)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&netnsPath, "netns", "", "path of the network namespace (e.g. /run/netns/NAME, /proc/PID/ns/net)")
	fl.StringVar(&f.name, "name", "", "container name")
	fl.StringVar(&f.network, "network", "", "network name (default: bridge)")
	fl.StringVar(&f.ip, "ip", "", "IPv4 address on the network (default: the next free one)")
	fl.StringVar(&f.ip6, "ip6", "", "IPv6 address on a network with IPv6 (default: the next free one)")
	fl.StringVar(&f.mac, "mac-address", "", "the interface's MAC address, unicast, such as 02:42:0a:58:00:05 (default: one derived from its address)")
	fl.StringVar(&ifName, "ifname", "", "name of the interface in the namespace (default eth0; only eth0 gets the default route)")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a port: [HOSTIP:][HOSTPORT[-END]:]PORT[-END][/tcp|/udp|/sctp], an IPv6 HOSTIP in brackets (repeatable)")
	addBandwidthFlags(fl, &f)
	return cmd
}
