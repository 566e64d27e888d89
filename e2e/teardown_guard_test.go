package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/fault"
	"github.com/ctnet/ctnet/internal/lab"
)

// A container's port leaves its bridge before the port's firewall elements go: the
// bridge table passes what comes from a port it does not know, so elements removed
// first would let the leaving container forge frames to its neighbours for as long
// as the rest of the removal took, and for good after a crash. network disconnect of
// a running container and rm of an attached one are killed after each of their
// kernel changes in turn; after every kill the leaving container's forged datagrams
// reach no neighbour, while its own-address ones did before the removal.
func TestTeardownLeavesNoUncheckedPort(t *testing.T) {
	e := newEnv(t)
	for _, key := range []string{"all", "default"} {
		e.host.Sysctl(t, "net.ipv4.conf."+key+".rp_filter", "0")
	}
	e.must("network", "create", "web", "--subnet", "10.68.0.0/24")
	e.runDetached("--name", "victim", "--network", "web", "--", "socat", "-u", "UDP-RECV:5555", "STDOUT")
	victim := e.ip("victim")
	victimSaw := func(payload string) bool {
		return strings.Contains(e.ctnet("logs", "victim").Stdout, "probe-from-"+payload)
	}
	// send forges nothing by itself: src is the datagram's source, the leaver's own
	// address or another. A send that finds no route (eth0 already retired) sends
	// nothing, which is what the guard wants anyway.
	send := func(netns, src string) {
		e.host.Try(append(lab.InNetNS(netns), "/usr/bin/python3", "-c", spoofScript, src, victim, "5555")...)
	}

	cases := []struct {
		name  string
		leave func() (netns string) // makes the leaving container, named leaver
		cmd   []string
	}{
		{"network disconnect of a running container", func() string {
			e.runDetached("--name", "leaver", "--network", "web", "--", "sleep", "600")
			return e.inspect("leaver").NetNS
		}, []string{"network", "disconnect", "web", "leaver"}},
		{"rm of an attached container", func() string {
			ns := lab.NewSandbox(t)
			e.must("attach", "--netns", ns.Path, "--name", "leaver", "--network", "web")
			return ns.Path
		}, []string{"rm", "leaver"}},
	}
	forged := 100
	for _, c := range cases {
		for k := 1; ; k++ {
			netns := c.leave()
			if k == 1 {
				own := e.ip("leaver")
				if !eventually(func() bool {
					if !victimSaw(own) {
						send(netns, own)
					}
					return victimSaw(own)
				}) {
					t.Fatalf("%s: the leaver's own datagrams do not reach the victim: the test cannot tell anything", c.name)
				}
			}
			marker := filepath.Join(t.TempDir(), "kill-marker")
			r := e.host.CtnetEnv(t, e.root, []string{fmt.Sprintf("%s=%d", fault.EnvKillAfter, k), fault.EnvKillMarker + "=" + marker}, c.cmd...)
			step := killedAt(t, marker, k)
			forged++
			src := fmt.Sprintf("10.68.0.%d", forged)
			send(netns, src)
			time.Sleep(500 * time.Millisecond)
			if victimSaw(src) {
				t.Errorf("%s killed after %q (k=%d): a datagram forged from %s reached the victim", c.name, step, k, src)
			}
			e.must("gc")
			e.ctnet("rm", "-f", "leaver")
			if step == "" {
				if r.Code != 0 {
					t.Fatalf("%s, not killed at k=%d: %s", c.name, k, r)
				}
				break
			}
		}
	}
	e.must("rm", "-f", "victim")
	e.must("network", "rm", "web")
}
