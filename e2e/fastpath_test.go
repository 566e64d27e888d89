package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// forgedFrameScript sends, out of eth0, UDP frames to port 5555 with the Ethernet and IPv4
// addresses it is given, whatever the interface's own: a hostile container forging
// at layer 2, past its kernel's routing and neighbour tables.
const forgedFrameScript = `
import sys
from scapy.all import Ether, IP, UDP, Raw, conf, sendp
conf.verb = 0
ethsrc, ethdst, ipsrc, ipdst, payload = sys.argv[1:6]
sendp(Ether(src=ethsrc, dst=ethdst) / IP(src=ipsrc, dst=ipdst) / UDP(sport=4444, dport=5555) / Raw(payload.encode()), iface="eth0", count=3)
`

// endpoint is what a container's interface is, as its own kernel holds it.
type endpoint struct{ name, mac, ip, hostVeth string }

func (e *env) endpoint(name string) endpoint {
	e.t.Helper()
	out, err := e.inContainer(name, "ip", "-j", "link", "show", "eth0")
	var links []struct {
		Address string `json:"address"`
	}
	if err != nil || json.Unmarshal([]byte(out), &links) != nil || len(links) != 1 {
		e.t.Fatalf("read the MAC of %s's eth0: %v: %s", name, err, out)
	}
	return endpoint{name: name, mac: links[0].Address, ip: e.kernelAddr(name, "eth0"), hostVeth: e.inspect(name).Networks[0].HostVeth}
}

// fastPathFilter reports whether tc lists ctnet's eBPF filter on a host veth's
// ingress.
func (e *env) fastPathFilter(hostVeth string) bool {
	e.t.Helper()
	out, err := e.hostRun("tc", "filter", "show", "dev", hostVeth, "ingress")
	if err != nil {
		e.t.Fatalf("tc filter show dev %s ingress: %v: %s", hostVeth, err, out)
	}
	return strings.Contains(out, "ctnet_peer") && strings.Contains(out, "direct-action")
}

var tbfSentRE = regexp.MustCompile(`qdisc tbf [^\n]*\n\s*Sent \d+ bytes (\d+) pkt`)

// The fast path (package fastpath) hands frames between two containers of one
// network past the bridge, and keeps every guarantee the bridge path gives: each
// attack below is a frame forged at layer 2 by a container's root, which the program
// must leave to the bridge, where ctnet's bridge table drops it; each has a control,
// the same frame made honest, that arrives. A witness table counts what reaches the
// bridge: honest frames between two fast-path ports never do, forged ones do (and go
// no further). icc=false networks and containers with bandwidth limits are not on
// the fast path: their frames take the bridge's isolation and the token bucket.
func TestFastPath(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "n1", "--subnet", "10.97.5.0/24")
	e.must("network", "create", "n2", "--subnet", "10.97.6.0/24")
	e.must("network", "create", "apart", "--subnet", "10.97.7.0/24", "--opt", "icc=false")
	receiver := []string{"--", "socat", "-u", "UDP-RECV:5555", "STDOUT"}
	e.runDetached("--name", "a", "--network", "n1", "--", "sleep", "600")
	e.runDetached(append([]string{"--name", "b", "--network", "n1"}, receiver...)...)
	e.runDetached(append([]string{"--name", "slow", "--network", "n1", "--ingress-rate", "100M"}, receiver...)...)
	e.runDetached(append([]string{"--name", "c", "--network", "n2"}, receiver...)...)
	e.runDetached("--name", "d", "--network", "n2", "--", "sleep", "600")
	e.runDetached("--name", "x", "--network", "apart", "--", "sleep", "600")
	e.runDetached(append([]string{"--name", "y", "--network", "apart"}, receiver...)...)
	ep := map[string]endpoint{}
	for _, name := range []string{"a", "b", "slow", "c", "d", "x", "y"} {
		ep[name] = e.endpoint(name)
	}
	for name, want := range map[string]bool{"a": true, "b": true, "c": true, "d": true, "slow": false, "x": false, "y": false} {
		if got := e.fastPathFilter(ep[name].hostVeth); got != want {
			t.Errorf("container %s: ctnet's eBPF filter on %s: %t, want %t", name, ep[name].hostVeth, got, want)
		}
	}

	saw := func(name, payload string) bool {
		return strings.Contains(e.ctnet("logs", name).Stdout, payload)
	}
	send := func(from string, ethsrc, ethdst, ipsrc, ipdst, payload string) {
		t.Helper()
		if out, err := e.inContainer(from, "/usr/bin/python3", "-c", forgedFrameScript, ethsrc, ethdst, ipsrc, ipdst, payload); err != nil {
			t.Fatalf("send frames from %s: %v: %s", from, err, out)
		}
	}
	// The receivers may still be binding: honest frames are sent until they arrive.
	deliver := func(from, to, payload string) bool {
		s, d := ep[from], ep[to]
		return eventually(func() bool {
			if !saw(to, payload) {
				send(from, s.mac, d.mac, s.ip, d.ip, payload)
			}
			return saw(to, payload)
		})
	}
	witness := newCounters(t, e.hostRun, "bridge", "type filter hook prerouting priority -400;", map[string]string{
		"honest":     fmt.Sprintf("iifname %s ether saddr %s ip saddr %s udp dport 5555", ep["a"].hostVeth, ep["a"].mac, ep["a"].ip),
		"forged_mac": fmt.Sprintf("iifname %s ether saddr 02:42:0a:61:05:63 udp dport 5555", ep["a"].hostVeth),
		"forged_ip":  fmt.Sprintf("iifname %s ip saddr 10.97.5.99 udp dport 5555", ep["a"].hostVeth),
		"to_slow":    fmt.Sprintf("iifname %s ether daddr %s udp dport 5555", ep["a"].hostVeth, ep["slow"].mac),
	})

	// Honest frames between two fast-path ports arrive without touching the bridge.
	if !deliver("a", "b", "honest-a-b") {
		t.Fatalf("a's honest frames do not reach b: the test proves nothing")
	}
	if n := witness.packets("honest"); n != 0 {
		t.Errorf("%d of a's honest frames to b went through the bridge: the fast path is not in use", n)
	}

	// Anti-spoofing: another source MAC, or another source address, with everything
	// else right.
	a, b := ep["a"], ep["b"]
	send("a", "02:42:0a:61:05:63", b.mac, a.ip, b.ip, "forged-mac")
	send("a", a.mac, b.mac, "10.97.5.99", b.ip, "forged-ip")
	if !deliver("a", "b", "honest-after-forged") {
		t.Fatalf("a's honest frames no longer reach b")
	}
	for _, forged := range []string{"forged-mac", "forged-ip"} {
		if saw("b", forged) {
			t.Errorf("b received a's frames with a %s", strings.ReplaceAll(forged, "-", " "))
		}
	}
	for _, counter := range []string{"forged_mac", "forged_ip"} {
		if witness.packets(counter) == 0 {
			t.Errorf("a's frames with a %s never reached the bridge, which would have dropped them", strings.ReplaceAll(counter, "_", " "))
		}
	}

	// Isolation: a frame from n1 addressed to a container of n2, at its MAC and
	// address, stays on n1's bridge; the same frame from n2's own d arrives.
	c := ep["c"]
	if !deliver("d", "c", "honest-d-c") {
		t.Fatalf("d's honest frames do not reach c on their own network: the test proves nothing")
	}
	send("a", a.mac, c.mac, a.ip, c.ip, "across-networks")
	time.Sleep(time.Second)
	if saw("c", "across-networks") {
		t.Errorf("a frame from network n1 reached c on network n2")
	}

	// icc=false: x's honest frames to y stay out, while y receives from the host.
	if !eventually(func() bool {
		e.hostRun("sh", "-c", "echo from-host | socat -u - UDP:"+ep["y"].ip+":5555")
		return saw("y", "from-host")
	}) {
		t.Fatalf("y on network apart does not receive from the host: the test proves nothing")
	}
	send("x", ep["x"].mac, ep["y"].mac, ep["x"].ip, ep["y"].ip, "icc-off")
	time.Sleep(time.Second)
	if saw("y", "icc-off") {
		t.Errorf("on the icc=false network apart, x's frames reached y")
	}

	// Bandwidth: frames to a container with an ingress limit pass its token bucket.
	tbfSent := func() int {
		out, err := e.hostRun("tc", "-s", "qdisc", "show", "dev", ep["slow"].hostVeth)
		m := tbfSentRE.FindStringSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("read the tbf of %s: %v: %s", ep["slow"].hostVeth, err, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	before := tbfSent()
	if !deliver("a", "slow", "to-slow") {
		t.Fatalf("a's frames do not reach slow")
	}
	if sent, reached := tbfSent()-before, witness.packets("to_slow"); sent < reached || reached == 0 {
		t.Errorf("a's frames to slow: %d reached the bridge, %d passed slow's token bucket: want them all on the bridge, then through the bucket", reached, sent)
	}

	e.must("rm", "-f", "a", "b", "slow", "c", "d", "x", "y")
	e.must("network", "rm", "n1", "n2", "apart")
}
