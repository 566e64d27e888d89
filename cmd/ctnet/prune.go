package main

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/network"
)

// containerCommand is Docker's `container` group, for what has no top-level command.
func (a *app) containerCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "container", Short: "Manage containers"}
	a.addLazy(cmd, lazyCommand{name: "prune", build: a.containerPruneCommand})
	return cmd
}

func (a *app) containerPruneCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "prune [-f]",
		Short: "Remove all exited containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force && !a.confirm("WARNING! This will remove all stopped containers.") {
				return nil // as Docker's: answering no is not a failure
			}
			return a.withManager(func(m *network.Manager) error {
				cs, err := m.Containers(true)
				if err != nil {
					return err
				}
				var deleted []string
				var failed []error
				for _, c := range cs {
					if c.State != network.StateExited {
						continue
					}
					// A container that was started again or removed meanwhile is not
					// this prune's to report.
					if err := m.Remove(cmd.Context(), c.ID, false); err != nil {
						if !errors.Is(err, network.ErrNotFound) && !errors.Is(err, network.ErrConflict) {
							failed = append(failed, err)
						}
						continue
					}
					deleted = append(deleted, c.ID)
				}
				a.printDeleted("Deleted Containers:", deleted)
				return errors.Join(failed...)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not prompt for confirmation")
	return cmd
}

func (a *app) networkPruneCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "prune [-f]",
		Short: "Remove all networks no running container uses (except the default network bridge)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force && !a.confirm("WARNING! This will remove all custom networks not used by at least one container.") {
				return nil // as Docker's: answering no is not a failure
			}
			return a.withRootManager("network prune", func(m *network.Manager) error {
				ns, err := m.Networks()
				if err != nil {
					return err
				}
				var deleted []string
				var failed []error
				for _, n := range ns {
					if networkType(n) == "builtin" {
						continue
					}
					// Without force, RemoveNetwork refuses a network in use: that refusal
					// is what tells prune to leave it.
					if err := m.RemoveNetwork(cmd.Context(), n.Name, false); err != nil {
						if !errors.Is(err, network.ErrNotFound) && !errors.Is(err, network.ErrConflict) {
							failed = append(failed, err)
						}
						continue
					}
					deleted = append(deleted, n.Name)
				}
				a.printDeleted("Deleted Networks:", deleted)
				return errors.Join(failed...)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not prompt for confirmation")
	return cmd
}

// confirm asks Docker's question after warning, and says whether the answer was yes.
func (a *app) confirm(warning string) bool {
	fmt.Fprintf(a.stdout, "%s\nAre you sure you want to continue? [y/N] ", warning)
	answer, _ := bufio.NewReader(a.stdin).ReadString('\n')
	answer = strings.ToLower(strings.TrimSpace(answer))
	return answer == "y" || answer == "yes"
}

func (a *app) printDeleted(heading string, names []string) {
	if len(names) == 0 {
		return
	}
	out := terminalText(a.stdout)
	fmt.Fprintln(out, heading)
	for _, n := range names {
		fmt.Fprintln(out, n)
	}
}
