package e2e

import (
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// --mac-address, as Docker's: the interface a run, an attach or a network connect
// makes has the MAC asked for, inspect reports it, and the container's traffic flows
// (the bridge table lets a port send only from its MAC, so a table that kept the
// derived one would drop it). A multicast or malformed MAC is refused in one line
// naming the flag, with nothing made.
func TestMACAddress(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "n", "--subnet", "10.97.21.0/24")
	e.must("network", "create", "m", "--subnet", "10.97.22.0/24")
	e.runDetached("--name", "a", "--network", "n", "--mac-address", "02:42:0a:58:00:05", "--", "sleep", "600")
	e.runDetached("--name", "b", "--network", "n", "--", "sleep", "600")
	pod := lab.NewSandbox(t)
	e.must("attach", "--netns", pod.Path, "--name", "pod", "--network", "n", "--mac-address", "02:42:0a:58:00:06")
	e.must("network", "connect", "--mac-address", "02:42:0a:58:00:07", "m", "b")

	for _, c := range []struct {
		container, ifname, mac string
		in                     []string // runs a command where the interface is
	}{
		{"a", "eth0", "02:42:0a:58:00:05", lab.InNetNS(e.inspect("a").NetNS)},
		{"pod", "eth0", "02:42:0a:58:00:06", lab.InNetNS(pod.Path)},
		{"b", "eth1", "02:42:0a:58:00:07", lab.InNetNS(e.inspect("b").NetNS)},
	} {
		if got := e.kernelMAC(c.in, c.ifname); got != c.mac {
			t.Errorf("%s's %s has the MAC %s, want %s", c.container, c.ifname, got, c.mac)
		}
		if text := e.must("inspect", c.container); !strings.Contains(text, c.mac) {
			t.Errorf("inspect %s does not show the MAC %s:\n%s", c.container, c.mac, text)
		}
	}
	for _, to := range []string{"a", "pod"} {
		ip := e.inspect(to).Networks[0].IP
		if !eventually(func() bool { return pingOK(e.containerRun("b"), ip) }) {
			t.Errorf("b does not reach %s at %s, whose interface has a MAC of its own", to, ip)
		}
	}

	before := e.must("ps", "-a", "-q")
	for _, mac := range []string{"01:00:5e:00:00:01", "02:42", "00:00:00:00:00:00"} {
		r := e.ctnet("run", "--network", "n", "--mac-address", mac, "--", "true")
		if r.Code != 125 || !strings.Contains(r.Stderr, `bad --mac-address "`+mac+`"`) || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
			t.Errorf("run --mac-address %s: want exit 125 and one line naming the flag, got %s", mac, r)
		}
	}
	if after := e.must("ps", "-a", "-q"); after != before {
		t.Errorf("refused runs left containers: before %q, after %q", before, after)
	}
	e.must("rm", "-f", "a", "b", "pod")
	e.must("network", "rm", "n", "m")
}
