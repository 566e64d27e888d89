package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/store"
)

// One host namespace is managed by one ctnet root. A second root's commands that
// would change it are refused in one line naming the root that has it, and change
// nothing (before, the second root's gc removed the first's bridges, veths and
// firewall elements as orphans); its reading commands work, and doctor says what to
// do. Once the first root no longer exists, the second takes the namespace over and
// removes what the first left behind.
func TestOneRootPerHostNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.runDetached("--name", "first", "-p", "8080:80", "--", "sleep", "600")
	const leftBridge = "ct-left"
	e.must("network", "create", "left", "--bridge", leftBridge)
	other := lab.Root(t)
	second := func(args ...string) lab.Result { return e.host.Ctnet(t, other, args...) }

	before := e.kernelState()
	refusal := "managed by the ctnet root " + e.root + ": use --root " + e.root
	for _, cmd := range [][]string{
		{"run", "-d", "--name", "second", "--", "sleep", "600"},
		{"run", "--network", "none", "--", "true"},
		{"network", "create", "net2"},
		{"gc"},
	} {
		r := second(cmd...)
		if r.Code == 0 || !strings.Contains(r.Stderr, refusal) || strings.Contains(strings.TrimSpace(r.Stderr), "\n") {
			t.Errorf("%v in a second root: want a one-line refusal saying %q, got %s", cmd, refusal, r)
		}
	}
	if r := second("ps", "-a", "-q"); r.Code != 0 || r.Stdout != "" {
		t.Errorf("ps in a second root: want an empty list, got %s", r)
	}
	if r := second("doctor"); r.Code == 0 || !strings.Contains(r.Stdout, "belong to the ctnet root "+e.root) {
		t.Errorf("doctor in a second root: want a problem naming %s, got %s", e.root, r)
	}
	if diff := before.Diff(e.kernelState()); diff != "" {
		t.Errorf("refused commands of a second root changed the kernel:\n%s", diff)
	}
	if out, err := e.hostRun("nft", "list", "set", "inet", "ctnet", "owner"); err != nil || !strings.Contains(out, fmt.Sprintf("comment %q", e.root)) {
		t.Errorf("nft does not show the tables as the first root's: %v\n%s", err, out)
	}
	if out, err := e.hostRun("ping", "-c", "1", "-W", "2", e.ip("first")); err != nil {
		t.Errorf("the first root's container is unreachable after the second root's refused commands: %v\n%s", err, out)
	}

	// The first root goes away (its database with it) and leaves its networks.
	e.must("rm", "-f", "first")
	links := e.linksIn(nil)
	for _, br := range []string{"ctnet0", leftBridge} {
		if _, ok := links[br]; !ok {
			t.Fatalf("the first root's bridge %s is missing before the takeover", br)
		}
	}
	if err := os.Rename(filepath.Join(e.root, store.FileName), filepath.Join(e.root, "gone.db")); err != nil {
		t.Fatal(err)
	}
	r := second("gc")
	report := r.Stdout + r.Stderr
	for _, want := range []string{
		"taking over the firewall tables",
		"removed interface ctnet0: its network no longer exists",
		"removed interface " + leftBridge + ": its network no longer exists",
		"removed firewall table inet ctnet: no network needs it",
	} {
		if r.Code != 0 || !strings.Contains(report, want) {
			t.Errorf("gc of the second root after the first is gone: want %q, got %s", want, r)
		}
	}
	links = e.linksIn(nil)
	for _, br := range []string{"ctnet0", leftBridge} {
		if _, ok := links[br]; ok {
			t.Errorf("the first root's bridge %s survives the takeover", br)
		}
	}
	if r := second("run", "-d", "--name", "second", "--", "sleep", "600"); r.Code != 0 {
		t.Fatalf("run in the second root after the takeover: %s", r)
	}
	var c container
	e.decodeInspected(second("inspect", "--format", "json", "second").Stdout, &c)
	if out, err := e.hostRun("ping", "-c", "1", "-W", "2", c.Networks[0].IP); err != nil {
		t.Errorf("the second root's container is unreachable: %v\n%s", err, out)
	}
	if out, err := e.hostRun("nft", "list", "set", "inet", "ctnet", "owner"); err != nil || !strings.Contains(out, fmt.Sprintf("comment %q", other)) {
		t.Errorf("nft does not show the tables as the second root's: %v\n%s", err, out)
	}
	for _, cmd := range [][]string{{"rm", "-f", "second"}, {"network", "rm", "bridge"}} {
		if r := second(cmd...); r.Code != 0 {
			t.Errorf("%v: %s", cmd, r)
		}
	}
	if err := os.Remove(filepath.Join(e.root, "gone.db")); err != nil {
		t.Error(err)
	}
}
