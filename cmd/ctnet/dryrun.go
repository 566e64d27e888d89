package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/network"
)

// dryRunSupport is what a command does with --dry-run and --explain.
type dryRunSupport int

const (
	// changesShown: both print the command's kernel changes.
	changesShown dryRunSupport = iota + 1
	// dryRunOnly: run, whose process and DNS server come after the lines; --explain
	// would not show them, and a detached container's supervisor makes its network.
	dryRunOnly
	// changesNothing: the command reads, and runs as it would without the flags.
	changesNothing
)

// dryRunCommands are the commands that take --dry-run or --explain, by path; every
// other command refuses both rather than change the kernel unseen.
var dryRunCommands = map[string]dryRunSupport{
	"ctnet network create": changesShown,
	"ctnet network rm":     changesShown,
	"ctnet attach":         changesShown,
	"ctnet rm":             changesShown,
	"ctnet run":            dryRunOnly,

	"ctnet ps": changesNothing, "ctnet inspect": changesNothing, "ctnet logs": changesNothing,
	"ctnet port": changesNothing, "ctnet network ls": changesNothing, "ctnet network inspect": changesNothing,
	"ctnet graph": changesNothing, "ctnet version": changesNothing,
}

// commandsWith lists, for the flags' help, the commands with the given support.
func commandsWith(support ...dryRunSupport) string {
	var names []string
	for path, s := range dryRunCommands {
		if slices.Contains(support, s) {
			names = append(names, strings.TrimPrefix(path, "ctnet "))
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func (a *app) addDryRunFlags(root *cobra.Command) {
	fl := root.PersistentFlags()
	fl.BoolVar(&a.dryRun, "dry-run", false, "print the kernel changes the command would make, as ip, nft and sysctl command lines on stdout, and change nothing: neither the kernel nor ctnet's state ("+commandsWith(changesShown, dryRunOnly)+")")
	fl.BoolVar(&a.explain, "explain", false, "make the command's kernel changes and print each, as --dry-run would, on stderr as it is made ("+commandsWith(changesShown)+")")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error { return a.startJournal(cmd) }
}

// startJournal gives the command its journal for --dry-run or --explain, or
// refuses the flags for a command that does not support them. A dry run's lines
// take stdout, and the command's own output (IDs and names of what does not
// exist) is dropped.
func (a *app) startJournal(cmd *cobra.Command) error {
	if !a.dryRun && !a.explain {
		return nil
	}
	flag := "--dry-run"
	if !a.dryRun {
		flag = "--explain"
	}
	if a.dryRun && a.explain {
		return usage("--dry-run and --explain exclude each other: --dry-run changes nothing, --explain makes the changes")
	}
	support := dryRunCommands[cmd.CommandPath()]
	switch {
	case support == changesNothing:
		return nil
	case support == 0, support == dryRunOnly && a.explain:
		return fmt.Errorf("%s does not take %s: it shows the kernel changes of %s only", cmd.CommandPath(), flag, supportedBy(a.explain))
	}
	if a.explain {
		a.journal = &netns.Journal{Out: a.stderr}
		return nil
	}
	a.journal = &netns.Journal{DryRun: true, Out: a.stdout}
	a.stdout = io.Discard
	return nil
}

// supportedBy names the commands that take --explain (explain) or --dry-run.
func supportedBy(explain bool) string {
	if explain {
		return commandsWith(changesShown)
	}
	return commandsWith(changesShown, dryRunOnly)
}

// runDryRun is run --dry-run: the container's network as Run would make it, then
// what Run does besides, which is no change to the network it shows.
func (a *app) runDryRun(spec network.ContainerSpec) error {
	return a.withManager(func(m *network.Manager) error {
		if _, err := m.Create(context.Background(), spec); err != nil {
			return &exitError{code: exitRunFailure, err: err}
		}
		a.journal.Comment("then, not shown: the container's embedded DNS server (on a network other than the default one, with table ip ctnet in its namespace redirecting 127.0.0.11:53 to the ports its sockets get) and " + shellWords(spec.Command) + " started in its namespace")
		return nil
	})
}

// shellWords is argv as one line, for a comment.
func shellWords(argv []string) string {
	return strings.Join(argv, " ")
}
