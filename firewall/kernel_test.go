package firewall

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/ctnet/ctnet/internal/lab"
)

// Render and the netlink programming describe the same tables: the rendered text
// loaded with `nft -f` into one namespace, and the same state built by Rebuild in
// another, list the same ruleset. Render is what people read to know what ctnet
// programs, so it must not drift from it.
func TestRenderMatchesKernel(t *testing.T) {
	lab.RequireRoot(t)
	viaNft, viaNetlink := lab.NewSandbox(t), lab.NewSandbox(t)
	state := representative()

	// nft cannot read back the rules it lists but cannot parse (listedOnly): the
	// script is loaded without them, and they must be, word for word, what nft
	// lists of the programmed tables.
	script, programmedOnly := Render(state), listedOnlyLines()
	for _, line := range programmedOnly {
		if !strings.Contains(script, "\t\t"+line+"\n") {
			t.Fatalf("Render does not print the rule %q", line)
		}
		script = strings.Replace(script, "\t\t"+line+"\n", "", 1)
	}
	loadScript(t, viaNft, script)
	conn := nftConn(t, viaNetlink)
	if err := Rebuild(conn, state); err != nil {
		t.Fatal(err)
	}

	list := func(s *lab.Sandbox) string {
		out, err := s.Try("nft", "list", "ruleset")
		if err != nil {
			t.Fatalf("nft list ruleset: %v\n%s", err, out)
		}
		return out
	}
	rendered, programmed := list(viaNft), list(viaNetlink)
	for _, line := range programmedOnly {
		if !strings.Contains(programmed, "\t\t"+line+"\n") {
			t.Errorf("nft does not list the programmed rule as Render prints it: %q", line)
		}
		programmed = strings.Replace(programmed, "\t\t"+line+"\n", "", 1)
	}
	if rendered != programmed {
		t.Errorf("nft lists the rendered tables and the programmed ones differently:\n%s", lineDiff(rendered, programmed))
	}
	if rec, err := ReadRecord(conn); err != nil || rec != (Record{Present: true, Owner: state.Owner, Current: true}) {
		t.Errorf("ReadRecord() = %+v, %v; want owner %q, present and current", rec, err, state.Owner)
	}
}

// ReadRecord reads what Claim and Rebuild record, in every shape ctnet's inet table
// can be found in; Claim replaces an owner and adds one to a table made without the
// set, recording the rules as this ctnet's.
func TestRecordAndClaim(t *testing.T) {
	lab.RequireRoot(t)
	current := Render(State{Owner: "/var/lib/ctnet"})
	older := strings.Replace(current, fmt.Sprintf("%q comment %q", rulesKey, rulesVersion()), fmt.Sprintf("%q comment %q", rulesKey, "0123456789ab"), 1)
	if older == current {
		t.Fatalf("the rendered tables hold no rules version:\n%s", current)
	}
	cases := []struct {
		name  string
		setup string // nft script loaded first; "" for none
		want  Record
	}{
		{"no table", "", Record{}},
		{"table without the owner set", "add table inet ctnet", Record{Present: true}},
		{"owner set without an element", Render(State{}), Record{Present: true}},
		{"recorded owner", current, Record{Present: true, Owner: "/var/lib/ctnet", Current: true}},
		{"rules of an older ctnet", older, Record{Present: true, Owner: "/var/lib/ctnet"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sb := lab.NewSandbox(t)
			if c.setup != "" {
				loadScript(t, sb, c.setup)
			}
			conn := nftConn(t, sb)
			rec, err := ReadRecord(conn)
			if err != nil || rec != c.want {
				t.Errorf("ReadRecord() = %+v, %v; want %+v, nil", rec, err, c.want)
			}
			if !rec.Present {
				return
			}
			const next = "/srv/other root"
			if err := Claim(conn, next); err != nil {
				t.Fatalf("Claim: %v", err)
			}
			out, err := sb.Try("nft", "list", "set", "inet", "ctnet", "owner")
			want := fmt.Sprintf(`elements = { "root" comment "/srv/other root",`)
			if err != nil || !strings.Contains(out, want) || !strings.Contains(out, rulesVersion()) {
				t.Errorf("after Claim, nft lists the owner set as:\n%s (%v)", out, err)
			}
			if rec, err := ReadRecord(conn); err != nil || rec.Owner != next || !rec.Current {
				t.Errorf("ReadRecord() after Claim = %+v, %v; want owner %q, current", rec, err, next)
			}
		})
	}
}

// loadScript loads an nft script into the sandbox with `nft -f`, without the rules
// nft cannot parse (listedOnly).
func loadScript(t *testing.T, sb *lab.Sandbox, script string) {
	t.Helper()
	for _, line := range listedOnlyLines() {
		script = strings.Replace(script, "\t\t"+line+"\n", "", 1)
	}
	load := sb.Command(t.Context(), "nft", "-f", "-")
	load.Stdin = strings.NewReader(script)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
}

// nftConn is an nftables connection bound to the sandbox, closed with the test.
func nftConn(t *testing.T, sb *lab.Sandbox) *nftables.Conn {
	t.Helper()
	conn, err := sb.NS(t).NFT()
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// listedOnlyLines are the rules nft lists but cannot parse, as Render prints them.
func listedOnlyLines() []string {
	var out []string
	for _, r := range append(slices.Clone(inetRules()), bridgeRules()...) {
		if r.listedOnly {
			line := r.text
			if r.comment != "" {
				line += fmt.Sprintf(" comment %q", r.comment)
			}
			out = append(out, line)
		}
	}
	return out
}
