package e2e

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// Each test here is a command as a Docker user types it, which ctnet answers as
// Docker does (issue 15).

// Mistakes in calling a command are reported as Docker reports them: the message,
// where to read more, and Docker's status (125 for run and exec, and for flag errors
// everywhere; 1 otherwise). The calls done right are the positive controls.
func TestDockerUsageErrors(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		args     []string
		code     int
		stderr   []string // lines the error holds, in order
		notInErr string
	}{
		{[]string{"network", "foo"}, 1, []string{"ctnet: unknown command: ctnet network foo", "See 'ctnet network --help'.", "", "Usage:  ctnet network COMMAND"}, ""},
		{[]string{"network", "lss"}, 1, []string{"ctnet: unknown command: ctnet network lss", "", "Did you mean this?", "\tls", "", "See 'ctnet network --help'."}, ""},
		{[]string{"pss"}, 1, []string{"ctnet: unknown command: ctnet pss", "", "Did you mean this?", "\tps", "", "See 'ctnet --help'."}, "; ;"},
		{[]string{"run"}, 125, []string{`ctnet: "ctnet run" requires at least 1 argument.`, "See 'ctnet run --help'.", "", "Usage:  ctnet run [flags] -- CMD [ARG...]"}, ""},
		{[]string{"run", "--bogus", "true"}, 125, []string{"ctnet: unknown flag: --bogus", "See 'ctnet run --help'."}, ""},
		{[]string{"exec", "web"}, 125, []string{`ctnet: "ctnet exec" requires at least 2 arguments.`, "See 'ctnet exec --help'."}, ""},
		{[]string{"exec", "nosuch", "true"}, 125, []string{"ctnet: "}, "See "},
		{[]string{"ps", "--bogus"}, 125, []string{"ctnet: unknown flag: --bogus", "See 'ctnet ps --help'."}, ""},
		{[]string{"ps", "extra"}, 1, []string{`ctnet: "ctnet ps" accepts no arguments.`, "See 'ctnet ps --help'."}, ""},
		{[]string{"network", "create"}, 1, []string{`ctnet: "ctnet network create" requires exactly 1 argument.`, "See 'ctnet network create --help'."}, ""},
		{[]string{"rm", "nosuch"}, 1, []string{"ctnet: "}, "See "},
		{[]string{"network"}, 0, nil, ""},
		{[]string{"network", "ls"}, 0, nil, ""},
		{[]string{"ps"}, 0, nil, ""},
	}
	for _, c := range cases {
		r := e.ctnet(c.args...)
		if r.Code != c.code {
			t.Errorf("ctnet %s: exit %d, want %d (%s)", strings.Join(c.args, " "), r.Code, c.code, r)
			continue
		}
		if c.code == 0 {
			if r.Stderr != "" {
				t.Errorf("ctnet %s: stderr %q, want none", strings.Join(c.args, " "), r.Stderr)
			}
			continue
		}
		if want := strings.Join(c.stderr, "\n"); !strings.Contains(r.Stderr, want) {
			t.Errorf("ctnet %s: stderr\n%s\nwant it to hold\n%s", strings.Join(c.args, " "), r.Stderr, want)
		}
		if c.notInErr != "" && strings.Contains(r.Stderr, c.notInErr) {
			t.Errorf("ctnet %s: stderr holds %q:\n%s", strings.Join(c.args, " "), c.notInErr, r.Stderr)
		}
	}
	if r := e.ctnet("network"); !strings.Contains(r.Stdout, "Available Commands:") {
		t.Errorf("ctnet network: want its help, got %s", r)
	}
}

// `ctnet ps` words a young container's age as Docker does, singular included.
func TestDockerStatusWording(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "web", "--", "sleep", "600")
	e.runDetached("--name", "done", "--", "true")
	up := regexp.MustCompile(`Up (Less than a second|1 second|[0-9]+ seconds|About a minute)\b`)
	exited := regexp.MustCompile(`Exited \(0\) (Less than a second|1 second|[0-9]+ seconds|About a minute) ago`)
	if !eventually(func() bool { return exited.MatchString(e.must("ps", "-a")) }) {
		t.Errorf("ctnet ps -a: no \"Exited (0) ... ago\" for done:\n%s", e.must("ps", "-a"))
	}
	ps := e.must("ps")
	if !up.MatchString(ps) || strings.Contains(ps, " 1 seconds") || strings.Contains(ps, " 1 minutes") {
		t.Errorf("ctnet ps: want Docker's wording of web's age:\n%s", ps)
	}
	e.must("rm", "-f", "web", "done")
	e.must("network", "rm", "bridge")
}

// `ctnet version`, `--version` and `completion SHELL` work as Docker's do; the version
// is the checkout's, stamped at build time.
func TestDockerVersionAndCompletion(t *testing.T) {
	e := newEnv(t)
	describe, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		lab.Missing(t, "needs a git checkout: %v", err)
	}
	want := strings.TrimSpace(string(describe))
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"version"}, 0, "Version:     " + want + "\n"},
		{[]string{"version", "--format", "{{.Version}}"}, 0, want + "\n"},
		{[]string{"--version"}, 0, "ctnet " + want + " (go"},
		{[]string{"completion", "bash"}, 0, "bash completion V2 for ctnet"},
		{[]string{"completion", "zsh"}, 0, "#compdef ctnet"},
		{[]string{"completion", "fish"}, 0, "complete -c ctnet"},
		{[]string{"completion", "tcsh"}, 1, ""},
	}
	for _, c := range cases {
		r := e.ctnet(c.args...)
		if r.Code != c.code || !strings.Contains(r.Stdout, c.want) || strings.Contains(r.Stdout, "(devel)") {
			t.Errorf("ctnet %s: %s; want exit %d and stdout holding %q", strings.Join(c.args, " "), r, c.code, c.want)
		}
	}
}
