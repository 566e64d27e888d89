package firewall

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/netns"
)

// Render and the netlink programming describe the same tables: the rendered text
// loaded with `nft -f` into one namespace, and the same state built by Rebuild in
// another, list the same ruleset. Render is what people read to know what ctnet
// programs, so it must not drift from it.
func TestRenderMatchesKernel(t *testing.T) {
	lab.RequireRoot(t)
	viaNft, viaNetlink := lab.NewSandbox(t), lab.NewSandbox(t)
	state := representative()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	load := viaNft.Command(ctx, "nft", "-f", "-")
	load.Stdin = strings.NewReader(Render(state))
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("nft -f of the rendered tables: %v\n%s", err, out)
	}

	ns, err := netns.Open(viaNetlink.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	conn, err := ns.NFT()
	if err != nil {
		t.Fatal(err)
	}
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
	if rendered != programmed {
		t.Errorf("nft lists the rendered tables and the programmed ones differently:\n%s", lineDiff(rendered, programmed))
	}
	if owner, present, err := Owner(conn); err != nil || !present || owner != state.Owner {
		t.Errorf("Owner() = %q, %v, %v; want %q, true, nil", owner, present, err, state.Owner)
	}
}
