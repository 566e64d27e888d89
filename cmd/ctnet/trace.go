package main

import (
	"context"
	"fmt"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/network"
)

func (a *app) traceCommand() *cobra.Command {
	var spec network.TraceSpec
	var format string
	var ipv4, ipv6 bool
	cmd := &cobra.Command{
		Use:   "trace SRC DST [--port N] [--proto tcp|udp|icmp] [-4|-6]",
		Short: "Send a real probe from a container (or the host) and show each firewall step on its way",
		Long: `Send one real packet from SRC (a container, or "host") to DST (a container or an IP
address, optionally NAME:PORT, ADDR:PORT or [IPV6]:PORT) and follow it with the kernel's
nftables tracing through every namespace on its way: each hop names the namespace, hook,
interfaces, chain, rule and verdict, and the last line says what became of it in ctnet's
terms (delivered, dropped and why, published port, masquerade). A container is probed at
its IPv4 address when SRC has IPv4 too, else at its IPv6 one; -4 or -6 chooses. Over IPv6,
icmp is an ICMPv6 echo request. The probe's rules live in temporary tables (ctnet_trace_*)
removed when trace ends; gc removes those of a trace that was killed.
Exit status 0 when the probe was delivered (or left the host), 1 when it was not.`,
		Example: `  ctnet trace web db:5432
  ctnet trace host 127.0.0.1:8080
  ctnet trace web 1.1.1.1 --proto icmp`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.From, spec.To = args[0], args[1]
			switch {
			case ipv4 && ipv6:
				return usage("-4 and -6 exclude each other: choose the probe's one IP version")
			case ipv4:
				spec.Family = 4
			case ipv6:
				spec.Family = 6
			}
			return a.withRootManager("trace", func(m *network.Manager) error {
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				res, err := m.Trace(ctx, spec)
				if err != nil {
					return err
				}
				if format == "json" {
					if err := writeJSON(a.stdout, res); err != nil {
						return err
					}
				} else {
					a.printTrace(res)
				}
				if !res.Delivered {
					return &exitError{code: exitFailure}
				}
				return nil
			})
		},
	}
	cmd.Flags().Uint16Var(&spec.Port, "port", 0, "destination port (tcp and udp)")
	cmd.Flags().StringVar(&spec.Proto, "proto", "", "tcp, udp or icmp (default tcp with a port, icmp without)")
	cmd.Flags().BoolVarP(&ipv4, "ipv4", "4", false, "probe over IPv4 (a container's IPv4 address)")
	cmd.Flags().BoolVarP(&ipv6, "ipv6", "6", false, "probe over IPv6 (a container's IPv6 address)")
	cmd.Flags().DurationVar(&spec.Wait, "timeout", network.DefaultTraceWait, "how long to wait for the probe to arrive or be dropped")
	cmd.Flags().StringVar(&format, "format", "", "json for the hops and outcome as JSON")
	return cmd
}

func (a *app) printTrace(res *network.TraceResult) {
	out := terminalText(a.stdout)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tHOOK\tIN\tOUT\tPACKET\tCT\tCHAIN\tRULE\tVERDICT")
	for _, h := range res.Hops {
		chain := "-"
		if h.Chain != "" {
			chain = h.Table + " " + h.Chain
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Namespace, h.Hook, dash(h.In), dash(h.Out), h.Packet, dash(h.Conntrack),
			chain, dash(h.Rule), h.Verdict)
	}
	w.Flush()
	for _, n := range res.Notes {
		fmt.Fprintln(out, n)
	}
	fmt.Fprintln(out, res.Outcome)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
