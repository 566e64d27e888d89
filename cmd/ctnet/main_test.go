package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-v"}} {
		var stdout, stderr bytes.Buffer
		code := execute(args, strings.NewReader(""), &stdout, &stderr)
		if code != 0 || !strings.HasPrefix(stdout.String(), "ctnet ") || !strings.Contains(stdout.String(), "go1.") {
			t.Errorf("ctnet %v: status %d, stdout %q, stderr %q; want status 0 and \"ctnet VERSION (goX, os/arch)\"",
				args, code, stdout.String(), stderr.String())
		}
	}
}

// TestLazyCommandsNamedAsBuilt: a stub is found by the name and aliases it was given,
// its command by its own, so they must be the same.
func TestLazyCommandsNamedAsBuilt(t *testing.T) {
	a := &app{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	var check func(cmd *cobra.Command)
	check = func(cmd *cobra.Command) {
		for _, sub := range cmd.Commands() {
			if sub.Name() == "help" && !cmd.HasParent() {
				continue // cobra's, which dockerHelp wraps
			}
			if _, ok := a.stubs[sub]; !ok {
				t.Errorf("%s is built before it is reached", sub.CommandPath())
				continue
			}
			name, aliases := sub.Name(), sub.Aliases
			a.replace(sub)
			built := cmd.Commands()
			i := slices.IndexFunc(built, func(c *cobra.Command) bool { return c.Name() == name })
			if i < 0 {
				t.Errorf("the stub %s %s became a command of another name", cmd.CommandPath(), name)
				continue
			}
			if !slices.Equal(built[i].Aliases, aliases) {
				t.Errorf("%s has aliases %q, its stub %q", built[i].CommandPath(), built[i].Aliases, aliases)
			}
			check(built[i])
		}
	}
	check(a.rootCommand())
	if len(a.stubs) != 0 {
		t.Errorf("%d stubs left after building every command", len(a.stubs))
	}
}

// TestCompletionListsEveryCommandAndFlag: the shells' completion scripts ask
// `ctnet __complete ARGS... PREFIX` of a fresh process, whose tree is built only as
// far as the arguments reach. What it offers after every command must be that
// command's subcommands and flags, as the whole tree has them.
func TestCompletionListsEveryCommandAndFlag(t *testing.T) {
	a := &app{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	root := a.rootCommand()
	a.buildAll(root)
	root.InitDefaultHelpCmd() // what cobra adds as it executes
	root.InitDefaultVersionFlag()
	complete := func(args ...string) []string {
		var stdout, stderr bytes.Buffer
		if code := execute(append([]string{"__complete"}, args...), strings.NewReader(""), &stdout, &stderr); code != 0 {
			t.Fatalf("ctnet __complete %q: status %d, stderr %q", args, code, stderr.String())
		}
		var offered []string
		for line := range strings.Lines(stdout.String()) {
			if word, _, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "\t"); !strings.HasPrefix(word, ":") {
				offered = append(offered, word)
			}
		}
		slices.Sort(offered)
		return offered
	}
	commands := 0
	var check func(cmd *cobra.Command, path []string)
	check = func(cmd *cobra.Command, path []string) {
		commands++
		var subcommands, flags []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() || sub.Name() == "help" {
				subcommands = append(subcommands, sub.Name())
			}
		}
		slices.Sort(subcommands)
		if got := complete(append(path, "")...); len(subcommands) > 0 && !slices.Equal(got, subcommands) {
			t.Errorf("ctnet __complete %s '': %q, want the subcommands %q", strings.Join(path, " "), got, subcommands)
		}
		cmd.InheritedFlags().VisitAll(func(f *pflag.Flag) { flags = append(flags, "--"+f.Name) })
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) { flags = append(flags, "--"+f.Name) })
		flags = append(flags, "--help")
		slices.Sort(flags)
		flags = slices.Compact(flags)
		if got := complete(append(path, "--")...); !slices.Equal(got, flags) {
			t.Errorf("ctnet __complete %s --: %q, want the flags %q", strings.Join(path, " "), got, flags)
		}
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				check(sub, append(slices.Clone(path), sub.Name()))
			}
		}
	}
	check(root, nil)
	if commands < 25 {
		t.Errorf("checked %d commands: the tree was not built whole", commands)
	}
}

// TestHelpOfEveryCommand: `ctnet PATH... --help` and `ctnet help PATH...`, each in a
// fresh process whose tree is built only as far as they reach, print the command's
// usage and list each of its subcommands, as the whole tree has them.
func TestHelpOfEveryCommand(t *testing.T) {
	a := &app{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	root := a.rootCommand()
	a.buildAll(root)
	var check func(cmd *cobra.Command, path []string)
	check = func(cmd *cobra.Command, path []string) {
		for _, args := range [][]string{append(slices.Clone(path), "--help"), append([]string{"help"}, path...)} {
			var stdout, stderr bytes.Buffer
			code := execute(args, strings.NewReader(""), &stdout, &stderr)
			out := stdout.String()
			if code != 0 || stderr.Len() != 0 || !strings.Contains(out, "Usage:\n  "+cmd.UseLine()) {
				t.Errorf("ctnet %s: status %d, stderr %q, stdout %q; want its usage %q", strings.Join(args, " "), code, stderr.String(), out, cmd.UseLine())
				continue
			}
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && !strings.Contains(out, "\n  "+sub.Name()+" ") {
					t.Errorf("ctnet %s does not list %s:\n%s", strings.Join(args, " "), sub.Name(), out)
				}
			}
			if cmd.Example != "" && !strings.Contains(out, "Examples:\n"+cmd.Example) {
				t.Errorf("ctnet %s does not show its examples:\n%s", strings.Join(args, " "), out)
			}
		}
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				check(sub, append(slices.Clone(path), sub.Name()))
			}
		}
	}
	check(root, nil)
}

// TestHelpUnknownTopic: `help` with a topic that is no command fails as Docker's does,
// naming what it could not find, where cobra's printed the root's help and exited 0;
// a command's subcommand, its alias and a flag after the topic are topics it knows.
func TestHelpUnknownTopic(t *testing.T) {
	for _, c := range []struct {
		args       []string
		wantCode   int
		wantStderr string
	}{
		{[]string{"help", "nosuch"}, 1, "ctnet: unknown help topic: nosuch\n"},
		{[]string{"help", "network", "nosuch"}, 1, "ctnet: unknown help topic: nosuch\n"},
		{[]string{"help", "network", "ls"}, 0, ""},
		{[]string{"help", "network", "list"}, 0, ""},
		{[]string{"help", "run", "--debug"}, 0, ""},
		{[]string{"help"}, 0, ""},
	} {
		var stdout, stderr bytes.Buffer
		code := execute(c.args, strings.NewReader(""), &stdout, &stderr)
		if code != c.wantCode || stderr.String() != c.wantStderr {
			t.Errorf("ctnet %s: status %d, stderr %q; want %d, %q", strings.Join(c.args, " "), code, stderr.String(), c.wantCode, c.wantStderr)
		}
		if c.wantCode == 0 && !strings.Contains(stdout.String(), "Usage:") {
			t.Errorf("ctnet %s printed no usage: %q", strings.Join(c.args, " "), stdout.String())
		}
	}
}
