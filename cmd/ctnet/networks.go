package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/network"
)

func (a *app) networkCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Manage networks",
		Args:  cobra.NoArgs,
	}
	a.addLazy(cmd, lazyCommand{name: "create", build: a.networkCreateCommand},
		lazyCommand{name: "ls", aliases: []string{"list"}, build: a.networkLsCommand},
		lazyCommand{name: "inspect", build: a.networkInspectCommand},
		lazyCommand{name: "rm", aliases: []string{"remove"}, build: a.networkRmCommand},
		lazyCommand{name: "connect", build: a.networkConnectCommand},
		lazyCommand{name: "disconnect", build: a.networkDisconnectCommand},
		lazyCommand{name: "prune", build: a.networkPruneCommand})
	return cmd
}

func (a *app) networkCreateCommand() *cobra.Command {
	var spec network.NetworkSpec
	var labels, opts, subnets, gateways []string
	ipv4 := true
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a bridge or macvlan network",
		Long: `Create a network: a Linux bridge holding the gateway address, IPAM over the subnet,
masquerade for the way out and isolation from other networks. Without --subnet a free
subnet is picked from 172.17-31.0.0/16 and 192.168.0.0/16 (as /20s) that overlaps no
route or address of the host and no other network.

With -d macvlan (Docker's macvlan driver, bridge mode) containers get a macvlan interface
on the host interface --parent and their own addresses on its segment: --subnet is the
segment's and --gateway its router; there is no bridge, no masquerade, no published port,
and the host itself cannot reach its macvlan containers through the parent (the kernel
does not pass traffic between a parent and its macvlans). ctnet's firewall does not see
this traffic: isolation on the segment is the segment's (see ARCHITECTURE.md).`,
		Example: `  ctnet network create web
  ctnet network create backend --subnet 172.30.0.0/24 --internal
  ctnet network create routed --subnet 10.99.0.0/24 --opt masquerade=false
  ctnet network create pods --subnet 10.244.1.0/24 --opt non-masquerade=10.244.0.0/16
  ctnet network create lan -d macvlan --parent eth0 --subnet 192.168.1.0/24 --gateway 192.168.1.1 --ip-range 192.168.1.192/27
  ctnet network create dual --ipv6
  ctnet network create dual2 --ipv6 --subnet 172.30.0.0/24 --subnet 2001:db8:30::/64
  ctnet network create v6only --ipv6 --ipv4=false
  ctnet network create apart --opt icc=false`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Name = args[0]
			spec.NoIPv4 = !ipv4
			if err := sortFamilies(subnets, "--subnet", &spec.Subnet, &spec.Subnet6); err != nil {
				return err
			}
			if err := sortFamilies(gateways, "--gateway", &spec.Gateway, &spec.Gateway6); err != nil {
				return err
			}
			var err error
			if spec.Labels, err = network.ParseLabels(labels); err != nil {
				return err
			}
			for _, o := range opts {
				k, v, _ := strings.Cut(o, "=")
				switch k {
				case "parent": // Docker's -o parent=eth0
					spec.Parent = v
				case "masquerade":
					b, err := strconv.ParseBool(v)
					if err != nil {
						return usage("bad --opt %q: masquerade takes true or false", o)
					}
					spec.Masquerade = &b
				case "non-masquerade":
					spec.NonMasquerade = append(spec.NonMasquerade, strings.Split(v, ",")...)
				case "icc":
					b, err := strconv.ParseBool(v)
					if err != nil {
						return usage("bad --opt %q: icc takes true or false", o)
					}
					spec.ICC = &b
				default:
					return usage("unknown --opt %q: the options are masquerade=true|false, icc=true|false, non-masquerade=CIDR,... and, for -d macvlan, parent=IFACE", o)
				}
			}
			return a.withRootManager("network create", func(m *network.Manager) error {
				n, err := m.CreateNetwork(cmd.Context(), spec)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, n.ID)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&subnets, "subnet", nil, "subnet in CIDR notation, one per family (default: a free one from the pools)")
	fl.StringArrayVar(&gateways, "gateway", nil, "gateway address, held by the bridge (a macvlan network's router), one per family (default: the subnet's first address)")
	fl.BoolVar(&spec.IPv6, "ipv6", false, "IPv6 too: an IPv6 --subnet, or else a unique-local /64 from fd63:746e:7400::/48")
	fl.BoolVar(&ipv4, "ipv4", true, "IPv4 (--ipv4=false with --ipv6: an IPv6-only network)")
	fl.StringVarP(&spec.Driver, "driver", "d", "bridge", "bridge, or macvlan: containers on the --parent interface's segment")
	fl.StringVar(&spec.Parent, "parent", "", "a macvlan network's host interface, whose segment its containers join")
	fl.StringVar(&spec.IPRange, "ip-range", "", "allocate addresses from this part of the subnet, in CIDR notation (default: all of it)")
	fl.StringVar(&spec.Bridge, "bridge", "", "bridge interface name, at most 15 bytes (default: ct-<id>)")
	fl.IntVar(&spec.MTU, "mtu", 0, "MTU (default: that of the host's default route interface)")
	fl.BoolVar(&spec.Internal, "internal", false, "no way out and no way in: containers reach only each other")
	fl.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	fl.StringArrayVarP(&opts, "opt", "o", nil, "driver option: masquerade=false for a routed network, icc=false for containers that cannot reach each other, non-masquerade=CIDR,... for destinations that see containers' own addresses")
	return cmd
}

func (a *app) networkLsCommand() *cobra.Command {
	var format string
	var quiet, noTrunc bool
	var filterArgs []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List networks",
		Example: `  ctnet network ls -q --filter type=custom
  ctnet network ls --format '{{.Name}} {{.Subnet}}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			filter, err := parseFilters(filterArgs, networkFilterKeys...)
			if err != nil {
				return err
			}
			if err := checkNetworkFilters(filter); err != nil {
				return err
			}
			if isTemplate(format) {
				if _, _, err := parseTemplate[networkRow](format); err != nil {
					return err
				}
			}
			return a.withManager(func(m *network.Manager) error {
				ns, err := m.Networks()
				if err != nil {
					return err
				}
				used := map[string]bool{}
				if filter.has("dangling") {
					cs, err := m.Containers(false)
					if err != nil {
						return err
					}
					for _, c := range cs {
						for _, at := range c.Attachments {
							used[at.NetworkID] = true
						}
					}
				}
				ns = filterNetworks(ns, filter, used)
				switch {
				case quiet:
					for _, n := range ns {
						fmt.Fprintln(a.stdout, shortID(n.ID, noTrunc))
					}
					return nil
				case format == "json":
					return writeJSON(a.stdout, ns)
				case isTemplate(format):
					rows := make([]networkRow, len(ns))
					for i, n := range ns {
						rows[i] = newNetworkRow(n, noTrunc)
					}
					return writeTemplate(a.stdout, format, rows)
				}
				t := newTable(a.stdout, "NETWORK ID", "NAME", "BRIDGE", "SUBNET", "GATEWAY", "MTU", "FLAGS")
				for _, n := range ns {
					var flags []string
					if n.Internal {
						flags = append(flags, "internal")
					}
					if !n.Masquerade && !n.Internal {
						flags = append(flags, "routed")
					}
					bridge := n.Bridge
					if n.Driver == network.DriverMacvlan {
						bridge = "macvlan:" + n.Parent
					}
					if n.NoICC {
						flags = append(flags, "no-icc")
					}
					t.row(shortID(n.ID, noTrunc), n.Name, bridge, joinValid(n.Subnet, n.Subnet6), joinValid(n.Gateway, n.Gateway6), fmt.Sprint(n.MTU), strings.Join(flags, ","))
				}
				return t.flush()
			})
		},
	}
	addFormatFlag(cmd, &format)
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only network IDs")
	cmd.Flags().StringArrayVarP(&filterArgs, "filter", "f", nil, "filter: id=PREFIX, name=REGEXP, label=KEY[=VALUE], driver=bridge|macvlan, type=custom|builtin, scope=local, dangling=true|false (repeatable)")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate IDs")
	return cmd
}

func (a *app) networkInspectCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect NAME...",
		Short: "Show networks with their containers and firewall entries",
		Long: `Show networks: as text, as ctnet's JSON (--format json, an array), or through a Go
template executed for each, with Docker's field names where Docker has the field:

  ctnet network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' demo
  ctnet network inspect -f '{{range .Containers}}{{.Name}} {{.IPv4Address}} {{end}}' demo`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if isTemplate(format) {
				if _, err := parseInspectTemplate(format); err != nil {
					return err
				}
			}
			return a.withManager(func(m *network.Manager) error {
				found, err := inspectObjects(m, "network", args)
				if perr := a.printInspected(found, format); perr != nil {
					return perr
				}
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", `output: table (text), json, or a Go template ('{{.IPAM.Config}}', '{{json .}}')`)
	return cmd
}

func printNetwork(a *app, info *network.NetworkInspect) {
	w := terminalText(a.stdout)
	fmt.Fprintf(w, "Network %s (%s)\n", info.Name, info.ID)
	if info.Driver == network.DriverMacvlan {
		fmt.Fprintf(w, "  driver:     macvlan (bridge mode)\n  parent:     %s\n", info.Parent)
	} else {
		fmt.Fprintf(w, "  bridge:     %s\n", info.Bridge)
	}
	if info.Subnet.IsValid() {
		fmt.Fprintf(w, "  subnet:     %s\n  gateway:    %s\n", info.Subnet, info.Gateway)
	}
	if info.Subnet6.IsValid() {
		fmt.Fprintf(w, "  subnet:     %s\n  gateway:    %s\n", info.Subnet6, info.Gateway6)
	}
	fmt.Fprintf(w, "  mtu:        %d\n", info.MTU)
	if info.IPRange.IsValid() {
		fmt.Fprintf(w, "  ip range:   %s\n", info.IPRange)
	}
	fmt.Fprintf(w, "  internal:   %t\n  masquerade: %t\n  icc:        %t\n", info.Internal, info.Masquerade, !info.NoICC)
	for _, p := range info.NonMasquerade {
		fmt.Fprintf(w, "  not masqueraded to: %s\n", p)
	}
	if len(info.Labels) > 0 {
		keys := make([]string, 0, len(info.Labels))
		for k := range info.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  label:      %s=%s\n", k, info.Labels[k])
		}
	}
	fmt.Fprintln(w, "\nContainers")
	t := newTable(w, "  NAME", "INTERFACE", "HOST VETH", "IP", "IPV6", "MAC")
	for _, c := range info.Containers {
		t.row("  "+c.Name, c.Interface, c.HostVeth, c.IP, c.IP6, c.MAC)
	}
	t.flush()
	if len(info.Firewall) > 0 {
		fmt.Fprintln(w, "\nFirewall entries")
		for _, e := range info.Firewall {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}

func (a *app) networkRmCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove networks (refused while containers use them, unless --force)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withRootManager("network rm", func(m *network.Manager) error {
				return eachName(a, args, func(name string) error { return m.RemoveNetwork(cmd.Context(), name, force) })
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "disconnect running containers first")
	return cmd
}

func (a *app) networkConnectCommand() *cobra.Command {
	var opts network.ConnectOptions
	cmd := &cobra.Command{
		Use:   "connect NETWORK CONTAINER",
		Short: "Connect a running container to another network (as eth1, eth2, ...)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withRootManager("network connect", func(m *network.Manager) error {
				att, err := m.Connect(cmd.Context(), args[0], args[1], opts)
				if err != nil {
					return err
				}
				var addrs []string
				if att.IP.IsValid() {
					addrs = append(addrs, fmt.Sprintf("%s/%d", att.IP, att.PrefixLen))
				}
				if att.IP6.IsValid() {
					addrs = append(addrs, fmt.Sprintf("%s/%d", att.IP6, att.PrefixLen6))
				}
				fmt.Fprintln(a.stdout, att.IfName, strings.Join(addrs, " "))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&opts.IP, "ip", "", "IPv4 address on the network (default: the next free one)")
	cmd.Flags().StringVar(&opts.IP6, "ip6", "", "IPv6 address on a network with IPv6 (default: the next free one)")
	cmd.Flags().StringVar(&opts.MAC, "mac-address", "", "the interface's MAC address, unicast, such as 02:42:0a:58:00:05 (default: one derived from its address)")
	cmd.Flags().StringVar(&opts.IfName, "ifname", "", "name of the container's new interface (default: the next free ethN)")
	return cmd
}

func (a *app) networkDisconnectCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "disconnect NETWORK CONTAINER",
		Short: "Disconnect a container from a network",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withRootManager("network disconnect", func(m *network.Manager) error {
				return m.Disconnect(cmd.Context(), args[0], args[1])
			})
		},
	}
}

// sortFamilies puts each of a repeated flag's values into the field of its family:
// at most one IPv4 and one IPv6 value.
func sortFamilies(values []string, flag string, v4, v6 *string) error {
	for _, v := range values {
		field := v4
		if strings.Contains(v, ":") {
			field = v6
		}
		if *field != "" {
			return usage("%s given twice for one family (%s and %s): give at most one IPv4 and one IPv6 value", flag, *field, v)
		}
		*field = v
	}
	return nil
}

// joinValid is the valid ones of an IPv4 and an IPv6 value, comma-separated.
func joinValid[T interface {
	IsValid() bool
	String() string
}](v4, v6 T) string {
	var out []string
	for _, v := range []T{v4, v6} {
		if v.IsValid() {
			out = append(out, v.String())
		}
	}
	return strings.Join(out, ",")
}
