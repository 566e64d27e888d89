package e2e

import (
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// Changes touch only set and map elements, so tables an older ctnet built keep its
// rules — and a fixed rule would stay unfixed on a running host. The tables record
// the version of the rules they were built with: doctor reports older ones, reading
// commands leave them alone, and the first change rebuilds them with this ctnet's
// rules and every element the store describes.
func TestTablesOfAnOlderCtnetAreRebuilt(t *testing.T) {
	e := newEnv(t)
	e.runDetached(append([]string{"--name", "web", "-p", "8080:8000", "--"}, peerServer(8000)...)...)
	current := e.output("nft", "list", "ruleset")
	if !strings.Contains(current, `"rules" comment "`) || !strings.Contains(current, `ip daddr 127.0.0.0/8 drop`) {
		t.Fatalf("the tables record no rules version or lack the loopback drop:\n%s", current)
	}
	if r := e.ctnet("doctor"); r.Code != 0 {
		t.Errorf("doctor with current tables: %s", r)
	}

	// What an older ctnet left: no rules version, and a rule it did not have. Its
	// supervisors did not watch the tables; this one's would rebuild them at once.
	resumeSupervisors := e.pauseSupervisors()
	defer resumeSupervisors()
	e.host.MustRun(t, "nft", "delete", "element", "inet", "ctnet", "owner", `{ "rules" }`)
	e.host.MustRun(t, "nft", "flush", "chain", "inet", "ctnet", "raw")
	older := e.output("nft", "list", "ruleset")
	if strings.Contains(older, "127.0.0.0/8 drop") {
		t.Fatalf("the simulated older tables still drop 127.0.0.0/8:\n%s", older)
	}
	if r := e.ctnet("doctor"); r.Code == 0 || !strings.Contains(r.Stdout, "older ctnet") {
		t.Errorf("doctor does not report tables of an older ctnet: %s", r)
	}
	e.must("ps")
	e.must("inspect", "web")
	if got := e.output("nft", "list", "ruleset"); got != older {
		t.Errorf("reading commands changed the older tables:\n%s", got)
	}

	e.must("network", "create", "other")
	if got := e.output("nft", "list", "ruleset"); !strings.Contains(got, "127.0.0.0/8 drop") || !strings.Contains(got, `"rules" comment "`) {
		t.Errorf("the first change left the older tables as they were:\n%s", got)
	}
	e.checkConsistent(t)
	resumeSupervisors()
	if !eventually(func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, 8080) == lab.WANIP }) {
		t.Errorf("the published port does not answer the wan after the rebuild")
	}
	e.must("rm", "-f", "web")
	e.must("network", "rm", "other", "bridge")
}
