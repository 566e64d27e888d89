package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
)

// forgedFrameScript sends, out of eth0, UDP frames to port 5555 with the Ethernet and IP
// addresses it is given (IPv4 or IPv6), whatever the interface's own: a hostile
// container forging at layer 2, past its kernel's routing and neighbour tables. An
// optional last argument sends the UDP datagram behind an IPv6 hop-by-hop header, or
// a router advertisement instead of it.
const forgedFrameScript = `
import sys
from scapy.all import Ether, IP, IPv6, IPv6ExtHdrHopByHop, ICMPv6ND_RA, UDP, Raw, conf, sendp
conf.verb = 0
ethsrc, ethdst, ipsrc, ipdst, payload = sys.argv[1:6]
kind = sys.argv[6] if len(sys.argv) > 6 else "udp"
packet = IPv6(src=ipsrc, dst=ipdst) if ":" in ipsrc else IP(src=ipsrc, dst=ipdst)
datagram = UDP(sport=4444, dport=5555) / Raw(payload.encode())
packet /= {"udp": datagram, "hop-by-hop": IPv6ExtHdrHopByHop() / datagram, "router-advert": ICMPv6ND_RA() / Raw(payload.encode())}[kind]
sendp(Ether(src=ethsrc, dst=ethdst) / packet, iface="eth0", count=3)
`

// endpoint is what a container's interface is, as its own kernel holds it: ip6 is
// its global IPv6 address, if it has one.
type endpoint struct{ name, mac, ip, ip6, hostVeth string }

func (e *env) endpoint(name string) endpoint {
	e.t.Helper()
	ep := endpoint{name: name, mac: e.kernelMAC(lab.InNetNS(e.inspect(name).NetNS), "eth0"), ip: e.kernelAddr(name, "eth0"), hostVeth: e.inspect(name).Networks[0].HostVeth}
	for _, a := range e.linksIn(lab.InNetNS(e.inspect(name).NetNS))["eth0"].Addrs {
		if a.Family == "inet6" && !strings.HasPrefix(a.Local, "fe80:") {
			ep.ip6 = a.Local
		}
	}
	return ep
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

// kernelMAC is the MAC of interface ifname as iproute2 run with the prefix in (a
// namespace's) reads it.
func (e *env) kernelMAC(in []string, ifname string) string {
	e.t.Helper()
	out, err := e.hostRun(append(in, "ip", "-j", "link", "show", ifname)...)
	var links []struct {
		Address string `json:"address"`
	}
	if err != nil || json.Unmarshal([]byte(out), &links) != nil || len(links) != 1 {
		e.t.Fatalf("read the MAC of %s: %v: %s", ifname, err, out)
	}
	return links[0].Address
}

// addr is the endpoint's address of family "IPv4" or "IPv6".
func (ep endpoint) addr(family string) string {
	if family == "IPv6" {
		return ep.ip6
	}
	return ep.ip
}

var tbfSentRE = regexp.MustCompile(`qdisc tbf [^\n]*\n\s*Sent \d+ bytes (\d+) pkt`)

// The fast path (package fastpath) hands frames between two containers of one
// network past the bridge, and keeps every guarantee the bridge path gives: each
// attack below is a frame forged at layer 2 by a container's root, which the program
// must leave to the bridge, where ctnet's bridge table drops it; each has a control,
// the same frame made honest, that arrives. A witness table counts what reaches the
// bridge: honest frames between two fast-path ports never do, forged ones do (and go
// no further). icc=false networks and containers with bandwidth limits are not on
// the fast path: their frames take the bridge's isolation and the token bucket. The
// networks are dual-stack: every check is made over IPv4 and IPv6, and over IPv6 the
// bridge still gets ICMPv6 (a router advertisement from the sender's own address)
// and extension headers.
func TestFastPath(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "n1", "--ipv6", "--subnet", "10.97.5.0/24", "--subnet", "fd97:5::/64")
	e.must("network", "create", "n2", "--ipv6", "--subnet", "10.97.6.0/24", "--subnet", "fd97:6::/64")
	e.must("network", "create", "apart", "--ipv6", "--subnet", "10.97.7.0/24", "--subnet", "fd97:7::/64", "--opt", "icc=false")
	receiver := []string{"--", "socat", "-u", "UDP6-RECV:5555,ipv6only=0", "STDOUT"}
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
	send := func(from string, ethsrc, ethdst, ipsrc, ipdst, payload string, kind ...string) {
		t.Helper()
		args := append([]string{"/usr/bin/python3", "-c", forgedFrameScript, ethsrc, ethdst, ipsrc, ipdst, payload}, kind...)
		if out, err := e.inContainer(from, args...); err != nil {
			t.Fatalf("send frames from %s: %v: %s", from, err, out)
		}
	}
	// The receivers may still be binding: honest frames are sent until they arrive.
	deliver := func(from, to, family, payload string) bool {
		s, d := ep[from], ep[to]
		return eventually(func() bool {
			if !saw(to, payload) {
				send(from, s.mac, d.mac, s.addr(family), d.addr(family), payload)
			}
			return saw(to, payload)
		})
	}
	a, b, c := ep["a"], ep["b"], ep["c"]
	witness := newCounters(t, e.hostRun, "bridge", "type filter hook prerouting priority -400;", map[string]string{
		"honest":        fmt.Sprintf("iifname %s ether saddr %s ether daddr %s ip saddr %s udp dport 5555", a.hostVeth, a.mac, b.mac, a.ip),
		"honest6":       fmt.Sprintf("iifname %s ether saddr %s ether daddr %s ip6 saddr %s udp dport 5555", a.hostVeth, a.mac, b.mac, a.ip6),
		"forged_mac":    fmt.Sprintf("iifname %s ether saddr 02:42:0a:61:05:63 udp dport 5555", a.hostVeth),
		"forged_ip":     fmt.Sprintf("iifname %s ip saddr 10.97.5.99 udp dport 5555", a.hostVeth),
		"forged_ip6":    fmt.Sprintf("iifname %s ip6 saddr fd97:5::99 udp dport 5555", a.hostVeth),
		"hop_by_hop":    fmt.Sprintf("iifname %s ip6 saddr %s ip6 nexthdr 0", a.hostVeth, a.ip6),
		"router_advert": fmt.Sprintf("iifname %s ip6 saddr %s icmpv6 type nd-router-advert", a.hostVeth, a.ip6),
		"to_slow":       fmt.Sprintf("iifname %s ether daddr %s udp dport 5555", a.hostVeth, ep["slow"].mac),
	})

	for _, family := range []string{"IPv4", "IPv6"} {
		// Honest frames between two fast-path ports arrive without touching the bridge.
		if !deliver("a", "b", family, "honest-a-b-"+family) {
			t.Fatalf("a's honest %s frames do not reach b: the test proves nothing", family)
		}

		// Anti-spoofing: another source MAC, or another source address, with
		// everything else right.
		forgedIP := map[string]string{"IPv4": "10.97.5.99", "IPv6": "fd97:5::99"}[family]
		send("a", "02:42:0a:61:05:63", b.mac, a.addr(family), b.addr(family), "forged-mac-"+family)
		send("a", a.mac, b.mac, forgedIP, b.addr(family), "forged-ip-"+family)
		if !deliver("a", "b", family, "honest-after-forged-"+family) {
			t.Fatalf("a's honest %s frames no longer reach b", family)
		}
		for _, forged := range []string{"forged-mac-", "forged-ip-"} {
			if saw("b", forged+family) {
				t.Errorf("b received a's %s frames with a %s", family, strings.ReplaceAll(strings.TrimSuffix(forged, "-"), "-", " "))
			}
		}

		// Isolation: a frame from n1 addressed to a container of n2, at its MAC and
		// address, stays on n1's bridge; the same frame from n2's own d arrives.
		if !deliver("d", "c", family, "honest-d-c-"+family) {
			t.Fatalf("d's honest %s frames do not reach c on their own network: the test proves nothing", family)
		}
		send("a", a.mac, c.mac, a.addr(family), c.addr(family), "across-networks-"+family)

		// icc=false: x's honest frames to y stay out, while y receives from the host.
		if !eventually(func() bool {
			e.hostRun("sh", "-c", "echo from-host-"+family+" | socat -u - UDP:"+net.JoinHostPort(ep["y"].addr(family), "5555"))
			return saw("y", "from-host-"+family)
		}) {
			t.Fatalf("y on network apart does not receive %s from the host: the test proves nothing", family)
		}
		send("x", ep["x"].mac, ep["y"].mac, ep["x"].addr(family), ep["y"].addr(family), "icc-off-"+family)
		time.Sleep(time.Second)
		if saw("c", "across-networks-"+family) {
			t.Errorf("a %s frame from network n1 reached c on network n2", family)
		}
		if saw("y", "icc-off-"+family) {
			t.Errorf("on the icc=false network apart, x's %s frames reached y", family)
		}
	}
	for _, counter := range []string{"honest", "honest6"} {
		if n := witness.packets(counter); n != 0 {
			t.Errorf("%d of a's honest frames to b (%s) went through the bridge: the fast path is not in use", n, counter)
		}
	}
	for _, counter := range []string{"forged_mac", "forged_ip", "forged_ip6"} {
		if witness.packets(counter) == 0 {
			t.Errorf("a's frames with a %s never reached the bridge, which would have dropped them", strings.ReplaceAll(counter, "_", " "))
		}
	}

	// What the bridge table judges over IPv6 beyond the source — ICMPv6 (here a
	// router advertisement, which it drops) and extension headers, which could
	// carry it — goes to the bridge even from a's own addresses to b's.
	send("a", a.mac, b.mac, a.ip6, b.ip6, "advert", "router-advert")
	send("a", a.mac, b.mac, a.ip6, b.ip6, "hop-by-hop", "hop-by-hop")
	for _, counter := range []string{"router_advert", "hop_by_hop"} {
		if witness.packets(counter) == 0 {
			t.Errorf("a's IPv6 frames to b with a %s never reached the bridge: the fast path took them", strings.ReplaceAll(counter, "_", " "))
		}
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
	if !deliver("a", "slow", "IPv4", "to-slow") {
		t.Fatalf("a's frames do not reach slow")
	}
	if sent, reached := tbfSent()-before, witness.packets("to_slow"); sent < reached || reached == 0 {
		t.Errorf("a's frames to slow: %d reached the bridge, %d passed slow's token bucket: want them all on the bridge, then through the bucket", reached, sent)
	}

	e.must("rm", "-f", "a", "b", "slow", "c", "d", "x", "y")
	e.must("network", "rm", "n1", "n2", "apart")
}
