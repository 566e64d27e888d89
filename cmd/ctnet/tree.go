package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The command tree is built only as far as the arguments reach. Every ctnet command
// is a fresh process, and building every subcommand with its flags for the one that
// runs was most of what main did before the command's own work. A command not
// reached stays a stub with its name and aliases, all that cobra's Find and its
// suggestions read. A command's stubs become commands when its help lists them,
// and its whole subtree is built when arguments are left over at it (an unknown
// subcommand, `help`, shell completion), whose handling may read any of it.

// lazyCommand is a subcommand built when reached: name and aliases are its
// command's own.
type lazyCommand struct {
	name    string
	aliases []string
	build   func() *cobra.Command
}

// addLazy adds a stub for each of cmds to parent.
func (a *app) addLazy(parent *cobra.Command, cmds ...lazyCommand) {
	if a.stubs == nil {
		a.stubs = map[*cobra.Command]func() *cobra.Command{}
	}
	for _, c := range cmds {
		stub := &cobra.Command{Use: c.name, Aliases: c.aliases}
		a.stubs[stub] = c.build
		parent.AddCommand(stub)
	}
}

// buildReached builds the commands on the way args take from root, and all below
// the command they end at when arguments are left there.
func (a *app) buildReached(root *cobra.Command, args []string) {
	for {
		cmd, rest, _ := root.Find(args)
		if _, ok := a.stubs[cmd]; ok {
			a.replace(cmd)
			continue
		}
		if hasArguments(cmd, rest) {
			a.buildAll(cmd)
		}
		return
	}
}

// replace puts stub's command in its place, with Docker's argument errors.
func (a *app) replace(stub *cobra.Command) {
	cmd := a.stubs[stub]()
	delete(a.stubs, stub)
	parent := stub.Parent()
	parent.RemoveCommand(stub)
	parent.AddCommand(cmd)
	dockerArgs(cmd)
}

// buildChildren builds cmd's direct subcommands; the root's include cobra's
// completion command, which is left out until then.
func (a *app) buildChildren(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		if _, ok := a.stubs[sub]; ok {
			a.replace(sub)
		}
	}
	if !cmd.HasParent() && cmd.CompletionOptions.DisableDefaultCmd {
		cmd.CompletionOptions.DisableDefaultCmd = false
		cmd.InitDefaultCompletionCmd()
		for _, sub := range cmd.Commands() {
			if sub.Name() == "completion" {
				dockerArgs(sub)
			}
		}
	}
}

func (a *app) buildAll(cmd *cobra.Command) {
	a.buildChildren(cmd)
	for _, sub := range cmd.Commands() {
		a.buildAll(sub)
	}
}

// withLazyTree makes root's tree lazy: the completion command waits for
// buildChildren, and help builds what it lists.
func (a *app) withLazyTree(root *cobra.Command) {
	root.CompletionOptions.DisableDefaultCmd = true
	help := root.HelpFunc()
	root.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		a.buildChildren(cmd)
		help(cmd, args)
	})
}

// dockerHelp makes `help` refuse a topic that is no command, as Docker's does
// ("unknown help topic: nosuch", status 1), where cobra's prints the root's help.
func (a *app) dockerHelp(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	for _, help := range root.Commands() {
		if help.Name() != "help" {
			continue
		}
		show := help.Run
		help.Run = nil
		help.RunE = func(cmd *cobra.Command, args []string) error {
			a.buildReached(root, args)
			if found, rest, err := root.Find(args); found == nil || err != nil || hasArguments(found, rest) {
				if len(rest) == 0 {
					rest = args
				}
				return fmt.Errorf("unknown help topic: %s", strings.Join(rest, " "))
			}
			show(cmd, args)
			return nil
		}
	}
}

// hasArguments says whether args, what cobra's Find left at cmd, hold an argument
// besides flags and their values (as cobra tells them apart).
func hasArguments(cmd *cobra.Command, args []string) bool {
	cmd.InheritedFlags() // merges its own and its parents' persistent flags into Flags, as Find's does
	flags := cmd.Flags()
	for i := 0; i < len(args); i++ {
		arg := args[i]
		var flag *pflag.Flag
		switch {
		case arg == "--":
			return i+1 < len(args)
		case arg == "-" || !strings.HasPrefix(arg, "-"):
			return true
		case strings.Contains(arg, "="):
			continue
		case strings.HasPrefix(arg, "--"):
			flag = flags.Lookup(arg[2:])
		case len(arg) == 2:
			flag = flags.ShorthandLookup(arg[1:])
		}
		if flag != nil && flag.NoOptDefVal == "" {
			i++ // the flag's value
		}
	}
	return false
}
