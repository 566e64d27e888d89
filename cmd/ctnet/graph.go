package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/network"
)

func (a *app) graphCommand() *cobra.Command {
	var format, output string
	cmd := &cobra.Command{
		Use:   "graph [--format text|dot|svg|json] [-o FILE]",
		Short: "Draw the networks: uplink, bridges, containers, veth pairs and published ports",
		Long: `Draw what ctnet has built, from its state and the kernel: the host's uplinks, each network's
bridge with its subnet and gateway (masqueraded, routed or internal), the containers on it
with their interfaces and addresses, the veth pair between them, and published ports.
text is for the terminal, dot for Graphviz and other tools, svg a picture drawn by ctnet
itself (no Graphviz needed).`,
		Example: `  ctnet graph
  ctnet graph --format svg -o networks.svg
  ctnet graph --format dot | dot -Tpng -o networks.png`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			render, ok := map[string]func(io.Writer, *network.Topology) error{
				"text": writeTopologyText, "dot": writeTopologyDOT, "svg": writeTopologySVG,
				"json": func(w io.Writer, t *network.Topology) error { return writeJSON(w, t) },
			}[format]
			if !ok {
				return usage("invalid --format %q: use text, dot, svg or json", format)
			}
			return a.withManager(func(m *network.Manager) error {
				topo, err := m.Topology()
				if err != nil {
					return err
				}
				var buf bytes.Buffer
				if err := render(&buf, topo); err != nil {
					return err
				}
				if output != "" && output != "-" {
					return os.WriteFile(output, buf.Bytes(), 0o644)
				}
				w := a.stdout
				if format == "text" {
					w = terminalText(w)
				}
				_, err = w.Write(buf.Bytes())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "text, dot, svg or json")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

// networkKind says how a network reaches beyond the host.
func networkKind(n network.TopologyNetwork) string {
	switch {
	case n.Internal:
		return "internal: no way out, no way in"
	case n.Masquerade:
		return "masqueraded behind the uplink"
	}
	return "routed: its own addresses on the uplink"
}

func writeTopologyText(w io.Writer, t *network.Topology) error {
	var b strings.Builder
	for _, u := range t.Uplinks {
		fmt.Fprintf(&b, "uplink %s %s", u.Interface, strings.Join(u.Addresses, " "))
		if u.Gateway != "" {
			fmt.Fprintf(&b, ", default via %s", u.Gateway)
		}
		b.WriteString("\n")
	}
	for _, n := range t.Networks {
		fmt.Fprintf(&b, "network %s: bridge %s (%s) %s/%d, subnet %s; %s\n", n.Name, n.Bridge, n.BridgeState,
			n.Gateway, n.Subnet.Bits(), n.Subnet.Masked(), networkKind(n))
		for _, mem := range n.Members {
			fmt.Fprintf(&b, "  %s: %s %s/%d, veth pair %s (host, %s) <-> %s", mem.Container, mem.Interface, mem.IP, mem.PrefixLen,
				mem.HostVeth, mem.HostVethState, mem.Interface)
			if len(mem.Ports) > 0 {
				fmt.Fprintf(&b, ", published %s", portsOf(mem.Ports))
			}
			b.WriteString("\n")
		}
	}
	for _, o := range t.Others {
		fmt.Fprintf(&b, "container %s: --network %s\n", o.Container, o.Mode)
	}
	if len(t.Networks) == 0 && len(t.Others) == 0 {
		b.WriteString("no networks\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// dotID quotes s as a DOT identifier or label.
func dotID(s string) string {
	s = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
	return `"` + s + `"`
}

func writeTopologyDOT(w io.Writer, t *network.Topology) error {
	var b strings.Builder
	b.WriteString("digraph ctnet {\n\trankdir=LR;\n\tnode [shape=box, fontname=\"Helvetica\", fontsize=10];\n\tedge [fontname=\"Helvetica\", fontsize=9];\n")
	for _, u := range t.Uplinks {
		label := "uplink " + u.Interface + "\n" + strings.Join(u.Addresses, "\n")
		fmt.Fprintf(&b, "\t%s [label=%s, shape=ellipse];\n", dotID("uplink:"+u.Interface), dotID(label))
	}
	placed := map[string]bool{}
	for _, n := range t.Networks {
		id := dotID("network:" + n.Name)
		style := "solid"
		if n.Internal {
			style = "dashed"
		}
		fmt.Fprintf(&b, "\t%s [label=%s, style=%s];\n", id, dotID(fmt.Sprintf("network %s\nbridge %s (%s)\n%s/%d gateway\n%s",
			n.Name, n.Bridge, n.BridgeState, n.Gateway, n.Subnet.Bits(), networkKind(n))), style)
		if !n.Internal {
			how := "masquerade"
			if !n.Masquerade {
				how = "routed"
			}
			for _, u := range t.Uplinks {
				fmt.Fprintf(&b, "\t%s -> %s [label=%s, dir=back];\n", dotID("uplink:"+u.Interface), id, dotID(how))
			}
		}
		for _, mem := range n.Members {
			cid := dotID("container:" + mem.Container)
			if !placed[mem.Container] {
				placed[mem.Container] = true
				fmt.Fprintf(&b, "\t%s [label=%s, shape=box3d];\n", cid, dotID("container "+mem.Container))
			}
			fmt.Fprintf(&b, "\t%s -> %s [label=%s, dir=none];\n", id, cid,
				dotID(fmt.Sprintf("%s <-> %s\n%s/%d", mem.HostVeth, mem.Interface, mem.IP, mem.PrefixLen)))
			for _, p := range mem.Ports {
				for _, u := range t.Uplinks {
					fmt.Fprintf(&b, "\t%s -> %s [label=%s, style=dashed, constraint=false];\n", dotID("uplink:"+u.Interface), cid,
						dotID("published "+portString(p)))
				}
			}
		}
	}
	for _, o := range t.Others {
		fmt.Fprintf(&b, "\t%s [label=%s, shape=box3d, style=dotted];\n", dotID("container:"+o.Container),
			dotID("container "+o.Container+"\n--network "+o.Mode))
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}
