package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// usageError is a command called wrongly (an unknown flag or subcommand, the wrong
// number of arguments, a bad flag value), which ctnet reports as Docker does: the
// message, then where to read how to call the command.
type usageError struct {
	msg string
	// flag marks a flag error, which Docker's every command exits 125 on.
	flag bool
	// withUsage adds the command's usage line and summary, as Docker does for a wrong
	// number of arguments and an unknown subcommand.
	withUsage bool
}

func (e *usageError) Error() string { return e.msg }

// usage is an error in how the command was called.
func usage(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// runFailureCommands are the commands whose own failures, usage errors included, exit
// 125, keeping 1 to 124 and 126 to 255 for the container's command, as Docker's run
// and exec do.
var runFailureCommands = map[string]bool{"ctnet run": true, "ctnet exec": true}

// dockerErrors makes every command in the tree report usage errors as Docker's do: a
// command group run with an unknown subcommand fails (instead of printing its help
// and succeeding), and argument and flag errors become usageErrors.
func dockerErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{msg: err.Error(), flag: true}
	})
	dockerArgs(root)
}

func dockerArgs(cmd *cobra.Command) {
	if cmd.HasSubCommands() {
		if !cmd.Runnable() {
			cmd.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
			cmd.DisableFlagsInUseLine = true // a group's usage is its subcommands'
		}
		cmd.Args = unknownSubcommand
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, which it sets only for its own check
	} else if check := cmd.Args; check != nil {
		cmd.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return &usageError{msg: argumentsMessage(cmd, err), withUsage: true}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		dockerArgs(sub)
	}
}

// unknownSubcommand refuses any argument to a command group, with cobra's
// suggestions of what may have been meant.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command: %s %s", cmd.CommandPath(), args[0])
	if suggestions := cmd.SuggestionsFor(args[0]); len(suggestions) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(suggestions, "\n\t")
	}
	return &usageError{msg: msg, withUsage: cmd.HasParent()}
}

// argumentsMessage words cobra's argument count errors as Docker's.
func argumentsMessage(cmd *cobra.Command, err error) string {
	path := cmd.CommandPath()
	var n, m, got int
	msg := err.Error()
	switch {
	case scan(msg, "requires at least %d arg(s), only received %d", &n, &got):
		return fmt.Sprintf("%q requires at least %d %s.", path, n, argumentWord(n))
	case scan(msg, "accepts at most %d arg(s), received %d", &n, &got):
		return fmt.Sprintf("%q requires at most %d %s.", path, n, argumentWord(n))
	case scan(msg, "accepts between %d and %d arg(s), received %d", &n, &m, &got):
		return fmt.Sprintf("%q requires at least %d and at most %d %s.", path, n, m, argumentWord(m))
	case scan(msg, "accepts %d arg(s), received %d", &n, &got):
		return fmt.Sprintf("%q requires exactly %d %s.", path, n, argumentWord(n))
	case strings.HasPrefix(msg, "unknown command "):
		return fmt.Sprintf("%q accepts no arguments.", path)
	}
	return msg
}

func scan(s, format string, args ...any) bool {
	n, err := fmt.Sscanf(s, format, args...)
	return err == nil && n == len(args)
}

func argumentWord(n int) string {
	if n == 1 {
		return "argument"
	}
	return "arguments"
}

// reportUsage writes a usage error as Docker does and returns the exit status.
func reportUsage(w io.Writer, cmd *cobra.Command, ue *usageError) int {
	path := cmd.CommandPath()
	msg := printable(ue.msg, "\n\t")
	if strings.Contains(msg, "\n") {
		msg += "\n"
	}
	fmt.Fprintf(w, "ctnet: %s\nSee '%s --help'.\n", msg, path)
	if ue.withUsage {
		fmt.Fprintf(w, "\nUsage:  %s\n\n%s\n", usageLine(cmd), cmd.Short)
	}
	if ue.flag || runFailureCommands[path] {
		return exitRunFailure
	}
	return exitFailure
}

func usageLine(cmd *cobra.Command) string {
	if cmd.HasAvailableSubCommands() && !strings.Contains(cmd.Use, " ") {
		return cmd.CommandPath() + " COMMAND"
	}
	return cmd.UseLine()
}

// asUsageError finds a usageError in err's tree.
func asUsageError(err error) (*usageError, bool) {
	return errors.AsType[*usageError](err)
}
