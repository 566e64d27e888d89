package main

import (
	"context"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/network"
)

func (a *app) watchCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "watch",
		Short: "Restore ctnet's firewall tables whenever something removes them",
		Long: `Run until SIGTERM or SIGINT, restoring ctnet's nftables tables as soon as a change
removes any part of them (nft flush ruleset, also as the first line of a reloaded
/etc/nftables.conf; iptables-restore and firewalld flush only their own tables), with
a line for each thing restored. It waits on nftables'
notifications and costs nothing in between. A detached container's supervisor does
the same while it runs; watch is for hosts whose containers are attached (ctnet
attach, the CNI plugin). Watchers may run side by side: one repairs, the others find
nothing to do. contrib/systemd/ctnet-watch.service runs it as a service.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withRootManager("watch", func(m *network.Manager) error {
				ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
				defer stop()
				out := terminalText(a.stdout)
				return m.WatchFirewall(ctx, func(line string) { fmt.Fprintln(out, line) })
			})
		},
	}
}

// watchFirewall runs a detached container's supervisor's turn at watching the firewall, with a
// manager of its own, until the returned function is called. Its lines go to the
// container's log, the only log a detached container has.
func (a *app) watchFirewall(c *network.Container) (stop func()) {
	m, err := a.manager()
	if err != nil {
		return func() {}
	}
	if m.Rootless() {
		m.Close()
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		say := func(line string) { network.AppendLog(c, "ctnet: "+printable(line, "")) }
		if err := m.WatchFirewallInTurn(ctx, say); err != nil {
			say("no longer watching the firewall tables: " + err.Error())
		}
	}()
	return func() {
		cancel()
		<-done
		m.Close()
	}
}
