package e2e

import (
	"strings"
	"testing"
)

// Names chosen inside a container reach the operator's terminal through ps, inspect
// and network inspect. A container root names an interface with escape sequences
// (one sets the window title, one clears the screen) and runs a command whose
// arguments hold more: the table output shows them escaped, the JSON output keeps
// them exactly (JSON escapes them itself).
func TestTerminalInjection(t *testing.T) {
	e := newEnv(t)
	const title, clear = "\x1b]0;pwned\x07", "\x1b[2J\x1b[H"
	e.runDetached("--name", "evil", "--", "sh", "-c", "sleep 600", clear+"arg\u202e")
	if _, err := e.inContainer("evil", "ip", "link", "add", title, "type", "bridge"); err != nil {
		t.Fatalf("the container cannot name an interface %q: %v", title, err)
	}
	// Positive control: the kernel holds the name as the container chose it.
	if out, _ := e.inContainer("evil", "ip", "-o", "link", "show"); !strings.Contains(out, title) {
		t.Fatalf("the hostile interface is not in the container:\n%q", out)
	}
	cases := []struct {
		args []string
		want string // the escaped form the output must show
	}{
		{[]string{"inspect", "evil"}, `\x1b]0;pwned\x07`},
		{[]string{"ps"}, `\x1b[2J\x1b[Harg\u202e`},
		{[]string{"inspect", "--format", "table", "evil"}, `\x1b[2J\x1b[Harg\u202e`},
		{[]string{"ps", "--no-trunc"}, `\x1b[2J\x1b[Harg\u202e`},
		{[]string{"ps", "--format", "table {{.Names}}\t{{.Command}}"}, `\x1b[2J\x1b[Harg\u202e`},
		{[]string{"inspect", "-f", "{{range .Stack.Links}}{{.Name}} {{end}}", "evil"}, `\x1b]0;pwned\x07`},
		{[]string{"inspect", "-f", "{{.Args}}", "evil"}, `\x1b[2J\x1b[Harg\u202e`},
	}
	for _, c := range cases {
		out := e.must(c.args...)
		if i := strings.IndexFunc(out, isTerminalControl); i >= 0 {
			t.Errorf("ctnet %s prints a control character (%q at byte %d):\n%q", strings.Join(c.args, " "), out[i], i, out)
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("ctnet %s does not show the hostile text escaped as %q:\n%s", strings.Join(c.args, " "), c.want, out)
		}
	}
	var info struct {
		Stack struct {
			Links []struct{ Name string } `json:"links"`
		} `json:"stack"`
	}
	e.decodeInspected(e.must("inspect", "--format", "json", "evil"), &info)
	found := false
	for _, l := range info.Stack.Links {
		found = found || l.Name == title
	}
	if !found {
		t.Errorf("inspect --format json does not give the interface's exact name %q: %+v", title, info.Stack.Links)
	}
	e.must("rm", "-f", "evil")
	e.must("network", "rm", "bridge")
}

// isTerminalControl reports the characters a terminal acts on: C0 controls other than
// newline and tab, DEL, and the C1 range.
func isTerminalControl(r rune) bool {
	return (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f)
}
