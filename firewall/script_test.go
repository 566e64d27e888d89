package firewall

import (
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// The scripts --dry-run and --explain print build what Rebuild, Apply and Delete
// program: each step done by nft -f with the script in one namespace and over
// netlink in another, nft lists the same ruleset (but for the rules nft cannot read
// back, which the rebuild script has as comments).
func TestScriptsMatchKernel(t *testing.T) {
	lab.RequireRoot(t)
	viaNft, viaNetlink := lab.NewSandbox(t), lab.NewSandbox(t)
	conn := nftConn(t, viaNetlink)
	full := representative()
	base := State{Owner: full.Owner, Networks: full.Networks}
	added := Change{Add: State{Endpoints: full.Endpoints, Ports: full.Ports}}
	removed := Change{Remove: State{Endpoints: full.Endpoints[:1], Ports: full.Ports[:1]}}

	list := func(s *lab.Sandbox) string {
		out, err := s.Try("nft", "list", "ruleset")
		if err != nil {
			t.Fatalf("nft list ruleset: %v\n%s", err, out)
		}
		for _, line := range listedOnlyLines() {
			out = strings.Replace(out, "\t\t"+line+"\n", "", 1)
		}
		return out
	}
	load := func(script string) {
		t.Helper()
		cmd := viaNft.Command(t.Context(), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -f: %v\n%s\n%s", err, out, script)
		}
	}
	for _, step := range []struct {
		what    string
		script  string
		program func() error
	}{
		{"rebuild", RebuildScript(base), func() error { return Rebuild(conn, base) }},
		{"apply additions", ApplyScript(added), func() error { return Apply(conn, added) }},
		{"apply removals", ApplyScript(removed), func() error { return Apply(conn, removed) }},
		{"rebuild over tables", RebuildScript(full), func() error { return Rebuild(conn, full) }},
		{"delete", DeleteScript(), func() error { return Delete(conn) }},
		{"delete without tables", DeleteScript(), func() error { return Delete(conn) }},
	} {
		load(step.script)
		if err := step.program(); err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		scripted, programmed := list(viaNft), list(viaNetlink)
		if scripted != programmed {
			t.Errorf("%s: nft lists the scripted tables and the programmed ones differently:\n%s", step.what, lineDiff(scripted, programmed))
		}
		if step.what == "apply additions" && !strings.Contains(programmed, "elements = ") {
			t.Errorf("%s: no elements in the tables", step.what)
		}
	}
}
