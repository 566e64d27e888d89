package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/network"
)

func (a *app) gcCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Reconcile the kernel with ctnet's state and remove what nothing owns",
		Long: `Release containers whose process is gone; remove interfaces, namespaces, firewall
elements, addresses and ports that nothing owns; restore bridges and firewall entries
that are missing. Prints one line per change, nothing when there was nothing to do.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withManager(func(m *network.Manager) error {
				report, err := m.GC(cmd.Context())
				out := terminalText(a.stdout)
				for _, line := range report {
					fmt.Fprintln(out, line)
				}
				return err
			})
		},
	}
}

func (a *app) doctorCommand() *cobra.Command {
	var rootless bool
	cmd := &cobra.Command{
		Use:   "doctor [--rootless]",
		Short: "Check the host for what would break ctnet's networks, and say how to fix it",
		Long: `Check the host for what would break ctnet's networks, and say how to fix it. With
--rootless, or run by an unprivileged user, check what unprivileged users' containers
need instead: user namespaces, /dev/net/tun, net.ipv4.ping_group_range and
ctnet-usernet beside ctnet. As root it also sends real probes (as ctnet trace does):
each running container to its gateways, and the host to each published TCP and UDP
port.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rootless || os.Geteuid() != 0 {
				return a.printFindings(rootlessFindings())
			}
			return a.withRootManager("doctor", func(m *network.Manager) error {
				findings, err := m.Doctor()
				if err != nil {
					return err
				}
				probes, err := m.ProbeFindings(cmd.Context())
				if err != nil {
					return err
				}
				return a.printFindings(append(findings, probes...))
			})
		},
	}
	cmd.Flags().BoolVar(&rootless, "rootless", false, "check what unprivileged users' containers need")
	return cmd
}

// printFindings prints doctor's findings and fails if any is a problem.
func (a *app) printFindings(findings []network.Finding) error {
	problems := 0
	out := terminalText(a.stdout)
	for _, f := range findings {
		if f.Problem {
			problems++
			fmt.Fprintf(out, "problem: %s\n   fix: %s\n", f.Text, f.Fix)
		} else {
			fmt.Fprintf(out, "ok: %s\n", f.Text)
		}
	}
	if problems > 0 {
		return &exitError{code: exitFailure, err: fmt.Errorf("%d problem(s) found", problems)}
	}
	return nil
}
