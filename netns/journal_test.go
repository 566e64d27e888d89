package netns

import (
	"strings"
	"testing"
)

// A journal prints each change as a shell line — the host's as they are, another
// namespace's through nsenter, arguments quoted where a shell would split or
// expand them, a script as a here-document — and makes it unless it is a dry run.
func TestJournal(t *testing.T) {
	host, other := &NS{path: "/proc/1/ns/net"}, &NS{path: "/run/ctnet/netns/c 1"}
	for _, dryRun := range []bool{false, true} {
		var out strings.Builder
		j := &Journal{DryRun: dryRun, Out: &out, Host: host}
		host.SetJournal(j)
		other.SetJournal(j)
		made := 0
		apply := func() error { made++; return nil }
		for _, c := range []struct {
			ns *NS
			ch Change
		}{
			{host, Change{Argv: []string{"ip", "link", "set", "br0", "alias", "ctnet:network:x"}}},
			{other, Change{Argv: []string{"ip", "link", "set", "eth0", "alias", "it's $HOME"}}},
			{host, Change{Argv: []string{"nft", "-f", "-"}, Stdin: "add table inet ctnet\n"}},
		} {
			if err := c.ns.Change(c.ch, apply); err != nil {
				t.Fatal(err)
			}
		}
		j.Comment("then start CMD")
		want := `ip link set br0 alias ctnet:network:x
nsenter '--net=/run/ctnet/netns/c 1' ip link set eth0 alias 'it'\''s $HOME'
nft -f - <<'EOF'
add table inet ctnet
EOF
# then start CMD
`
		if out.String() != want {
			t.Errorf("dry run %v: the journal printed\n%s\nwant\n%s", dryRun, out.String(), want)
		}
		if wantMade := map[bool]int{false: 3, true: 0}[dryRun]; made != wantMade {
			t.Errorf("dry run %v: %d changes made, want %d", dryRun, made, wantMade)
		}
	}
	// Without a journal a change is made and nothing printed.
	plain := &NS{path: "/proc/1/ns/net"}
	made := false
	if err := plain.Change(Change{Argv: []string{"true"}}, func() error { made = true; return nil }); err != nil || !made {
		t.Errorf("a change without a journal: made %v, %v", made, err)
	}
}

// A namespace a dry run only pretends to make has no handles: nothing reads back
// what was never made.
func TestPlannedNamespaceHasNoHandles(t *testing.T) {
	var out strings.Builder
	ns, err := NewIn(&Journal{DryRun: true, Out: &out}, "/nonexistent/netns/x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Netlink(); err == nil {
		t.Error("a planned namespace gave a netlink handle")
	}
	if _, err := ns.NFT(); err == nil {
		t.Error("a planned namespace gave an nftables connection")
	}
	if !strings.Contains(out.String(), "unshare --net=/nonexistent/netns/x true") {
		t.Errorf("NewIn printed %q", out.String())
	}
	if err := ns.Close(); err != nil {
		t.Error(err)
	}
}
