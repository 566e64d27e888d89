package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
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
