package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
)

// These tests play a hostile container (or a hostile wan) with real packets: each
// first shows that the attack's packets arrive where ctnet must stop them (or that the
// legitimate traffic of the same kind still flows), then that the attack does nothing.

// routeLoopbackVia makes the namespace run is in send packets for 127.0.0.1 out of
// iface via gateway, as its root can: loopback addresses allowed on iface, and a
// rule of its own looked up before the local table, which would otherwise keep them.
func routeLoopbackVia(run func(...string) (string, error), iface, gateway string) error {
	script := fmt.Sprintf(`set -e
sysctl -qw net.ipv4.conf.%[1]s.route_localnet=1
ip rule add pref 100 lookup local
ip rule del pref 0
ip route add 127.0.0.1/32 via %[2]s dev %[1]s table 50
ip rule add pref 50 to 127.0.0.0/8 lookup 50`, iface, gateway)
	if out, err := run("sh", "-c", script); err != nil {
		return fmt.Errorf("route 127.0.0.1 via %s: %v: %s", gateway, err, out)
	}
	return nil
}

// counters are named nft counters in a table of their own, fed by rules at a hook
// of one namespace: they show that packets arrived, independently of ctnet.
type counters struct {
	t             *testing.T
	run           func(...string) (string, error)
	family, table string
}

// newCounters makes table family `witness` in the namespace run is in, with one
// base chain (chain, as nft's "{ type ... }" body) and, per counter name, a rule
// counting what its match matches. It is deleted at cleanup.
func newCounters(t *testing.T, run func(...string) (string, error), family, chain string, matches map[string]string) *counters {
	t.Helper()
	c := &counters{t: t, run: run, family: family, table: "witness"}
	cmds := []string{
		fmt.Sprintf("add table %s %s", family, c.table),
		fmt.Sprintf("add chain %s %s c { %s }", family, c.table, chain),
	}
	for name, match := range matches {
		cmds = append(cmds,
			fmt.Sprintf("add counter %s %s %s", family, c.table, name),
			fmt.Sprintf("add rule %s %s c %s counter name %s", family, c.table, match, name))
	}
	if out, err := run("nft", strings.Join(cmds, "; ")); err != nil {
		t.Fatalf("make the witness counters: %v: %s", err, out)
	}
	t.Cleanup(func() { run("nft", "delete", "table", family, c.table) })
	return c
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)

func (c *counters) packets(name string) int {
	c.t.Helper()
	out, err := c.run("nft", "list", "counter", c.family, c.table, name)
	m := packetsRE.FindStringSubmatch(out)
	if err != nil || m == nil {
		c.t.Fatalf("read counter %s: %v: %s", name, err, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// namespaceOf runs commands in the container's namespace as it is now. Unlike
// containerRun it asks ctnet nothing later, so cleanups that run after the container
// is gone can use it (their commands then fail).
func (e *env) namespaceOf(name string) func(...string) (string, error) {
	e.t.Helper()
	path := e.inspect(name).NetNS
	return func(args ...string) (string, error) { return e.host.Try(append(lab.InNetNS(path), args...)...) }
}

// scapy runs a scapy script with Debian's python3 (PATH's may lack scapy).
func scapy(run func(...string) (string, error), script string, args ...string) error {
	if out, err := run(append([]string{"/usr/bin/python3", "-c", script}, args...)...); err != nil {
		return fmt.Errorf("scapy: %v: %s", err, out)
	}
	return nil
}

// A container's root can route 127.0.0.1 out of its eth0; the host must not take
// such packets for its own loopback (the CVE-2020-8558 class), although its bridges
// have route_localnet on for 127.0.0.1 publishing. The attack is tried from the
// default network, a user network and an --internal one against a service bound to
// the host's 127.0.0.1, and from another network and from the wan against a port
// published on 127.0.0.1 only. Each probe is counted arriving at the host, before
// ctnet's chains, so silence is ctnet's doing; the host itself still reaches both.
func TestLoopbackEscape(t *testing.T) {
	e := newEnv(t)
	const hostOnly, published = 7777, 8081
	srv := e.host.Command(t.Context(), "socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr", hostOnly), "SYSTEM:echo $SOCAT_PEERADDR")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	e.must("network", "create", "user", "--subnet", "10.94.0.0/24")
	e.must("network", "create", "sealed", "--internal", "--subnet", "10.95.0.0/24")
	e.runDetached(append([]string{"--name", "web", "-p", fmt.Sprintf("127.0.0.1:%d:8000", published), "--"}, peerServer(8000)...)...)
	e.runDetached("--name", "d", "--", "sleep", "600")
	e.runDetached("--name", "u", "--network", "user", "--", "sleep", "600")
	e.runDetached("--name", "s", "--network", "sealed", "--", "sleep", "600")

	for _, port := range []int{hostOnly, published} {
		if !eventually(func() bool { return askPeer(e.hostRun, "127.0.0.1", port) != "" }) {
			t.Fatalf("the host does not reach its own 127.0.0.1:%d", port)
		}
	}

	type attack struct {
		from string
		run  func(...string) (string, error)
		src  string
		port int
	}
	var attacks []attack
	for _, name := range []string{"d", "u", "s"} {
		c := e.inspect(name)
		if err := routeLoopbackVia(e.containerRun(name), "eth0", c.Networks[0].Gateway); err != nil {
			t.Fatal(err)
		}
		attacks = append(attacks, attack{"container " + name + " on network " + c.Networks[0].Network, e.containerRun(name), c.Networks[0].IP, hostOnly})
	}
	attacks = append(attacks, attack{"container u, another network than web's", e.containerRun("u"), e.ip("u"), published})
	if err := routeLoopbackVia(e.wanRun, "wan0", lab.HostUplinkIP); err != nil {
		t.Fatal(err)
	}
	attacks = append(attacks, attack{"the wan", e.wanRun, lab.WANIP, published})

	matches := map[string]string{}
	for i, a := range attacks {
		matches[fmt.Sprintf("probe%d", i)] = fmt.Sprintf("ip saddr %s ip daddr 127.0.0.1 tcp dport %d", a.src, a.port)
	}
	arrived := newCounters(t, e.hostRun, "ip", "type filter hook prerouting priority -400;", matches)
	for i, a := range attacks {
		if got := askPeer(a.run, "127.0.0.1", a.port); got != "" {
			t.Errorf("%s reached the host's 127.0.0.1:%d (the server saw %s)", a.from, a.port, got)
		}
		if arrived.packets(fmt.Sprintf("probe%d", i)) == 0 {
			t.Errorf("%s: the probe for 127.0.0.1:%d never reached the host: the test proves nothing", a.from, a.port)
		}
	}

	for _, port := range []int{hostOnly, published} {
		if askPeer(e.hostRun, "127.0.0.1", port) == "" {
			t.Errorf("the host no longer reaches its own 127.0.0.1:%d", port)
		}
	}
	e.must("rm", "-f", "web", "d", "u", "s")
	e.must("network", "rm", "bridge", "user", "sealed")
}

// ipv6Off reads net.ipv6.conf.<iface>.disable_ipv6 in the namespace run is in.
func ipv6Off(run func(...string) (string, error), iface string) bool {
	out, err := run("cat", "/proc/sys/net/ipv6/conf/"+iface+"/disable_ipv6")
	return err == nil && strings.TrimSpace(out) == "1"
}

const routerAdvertScript = `
import sys
from scapy.all import Ether, IPv6, ICMPv6ND_RA, ICMPv6NDOptSrcLLAddr, ICMPv6NDOptPrefixInfo, ICMPv6ND_Redirect, ICMPv6NDOptDstLLAddr, conf, get_if_hwaddr, sendp
from scapy.utils6 import in6_mactoifaceid
conf.verb = 0
mac = get_if_hwaddr("eth0")
me = "fe80::" + in6_mactoifaceid(mac)
l2 = Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=me, dst="ff02::1", hlim=255)
ra = l2 / ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptSrcLLAddr(lladdr=mac) / \
    ICMPv6NDOptPrefixInfo(prefix="2001:db8:1::", prefixlen=64, L=1, A=1)
redirect = l2 / ICMPv6ND_Redirect(tgt=me, dst="2001:db8:99::1") / ICMPv6NDOptDstLLAddr(lladdr=mac)
sendp([ra, redirect], iface="eth0", count=3)
`

// IPv6 is off on every interface of an IPv4-only network — the bridge, the host end
// of each veth and the container's end, made by run, network connect or attach — and
// a container's router advertisements and redirects reach nobody: not the host, not
// another container, not even one that turned IPv6 back on for itself (CVE-2020-13401
// class). The frames are counted leaving the attacker's port, so silence is ctnet's
// doing; IPv4 still flows.
func TestRouterAdvertisementsFromContainers(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "other", "--subnet", "10.96.0.0/24")
	e.runDetached("--name", "rogue", "--", "sleep", "600")
	e.runDetached("--name", "calm", "--", "sleep", "600")
	e.runDetached("--name", "keen", "--", "sleep", "600")
	e.must("network", "connect", "other", "calm")
	attached := lab.RandomName("ctx-")
	if out, err := exec.Command("ip", "netns", "add", attached).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", attached).Run()
	e.must("attach", "--netns", "/run/netns/"+attached, "--name", "ext")
	inAttached := func(args ...string) (string, error) {
		return e.host.Try(append([]string{"ip", "netns", "exec", attached}, args...)...)
	}

	for _, br := range []string{"ctnet0", e.bridgeOf("other")} {
		if !ipv6Off(e.hostRun, br) {
			t.Errorf("bridge %s has IPv6 on", br)
		}
	}
	for _, name := range []string{"rogue", "calm", "keen", "ext"} {
		run := e.containerRun(name)
		if name == "ext" {
			run = inAttached
		}
		for _, n := range e.inspect(name).Networks {
			if !ipv6Off(e.hostRun, n.HostVeth) {
				t.Errorf("%s's host veth %s (network %s) has IPv6 on", name, n.HostVeth, n.Network)
			}
			if !ipv6Off(run, n.Interface) {
				t.Errorf("%s's %s (network %s) has IPv6 on", name, n.Interface, n.Network)
			}
		}
	}
	e.must("rm", "ext")

	// keen wants IPv6 on its link; it must not get another container's router for it.
	if out, err := e.inContainer("keen", "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"); err != nil {
		t.Fatalf("turn IPv6 on in keen: %v: %s", err, out)
	}
	if !eventually(func() bool {
		out, _ := e.inContainer("keen", "ip", "-6", "addr", "show", "dev", "eth0", "scope", "link")
		return strings.Contains(out, "fe80::") && !strings.Contains(out, "tentative")
	}) {
		t.Fatalf("keen has no usable link-local address after turning IPv6 on")
	}
	sent := newCounters(t, e.hostRun, "bridge", "type filter hook prerouting priority -300;", map[string]string{
		"advertisements": "iifname " + e.inspect("rogue").Networks[0].HostVeth + " icmpv6 type nd-router-advert",
		"redirections":   "iifname " + e.inspect("rogue").Networks[0].HostVeth + " icmpv6 type nd-redirect",
	})
	received := newCounters(t, e.namespaceOf("keen"), "netdev", "type filter hook ingress device eth0 priority 0;", map[string]string{
		"advertisements": "icmpv6 type nd-router-advert",
		"redirections":   "icmpv6 type nd-redirect",
	})

	if err := scapy(e.containerRun("rogue"), routerAdvertScript); err != nil {
		t.Fatal(err)
	}
	if sent.packets("advertisements") == 0 || sent.packets("redirections") == 0 {
		t.Fatalf("rogue's advertisements and redirects never reached its bridge port: the test proves nothing")
	}
	time.Sleep(time.Second) // autoconfiguration runs as the advertisement arrives; give it a moment
	if n := received.packets("advertisements"); n > 0 {
		t.Errorf("keen received %d of rogue's router advertisements", n)
	}
	if n := received.packets("redirections"); n > 0 {
		t.Errorf("keen received %d of rogue's redirects", n)
	}
	victims := []struct {
		name, iface string
		run         func(...string) (string, error)
	}{
		{"the host", "ctnet0", e.hostRun},
		{"calm", "eth0", e.containerRun("calm")},
		{"keen", "eth0", e.containerRun("keen")},
	}
	for _, v := range victims {
		if out, _ := v.run("ip", "-6", "addr", "show", "dev", v.iface); strings.Contains(out, "2001:db8:1:") {
			t.Errorf("%s took an address from rogue's advertisement:\n%s", v.name, out)
		}
		// The host's own default route, via the wan's router, aside.
		if out, _ := v.run("ip", "-6", "route", "show", "default"); strings.TrimSpace(strings.ReplaceAll(out, "default via "+lab.WANIP6+" dev uplink0 metric 1024 pref medium", "")) != "" {
			t.Errorf("%s took a default route from rogue's advertisement:\n%s", v.name, out)
		}
	}
	if !pingOK(e.containerRun("keen"), e.ip("calm")) || !pingOK(e.hostRun, e.ip("rogue")) {
		t.Errorf("IPv4 between the containers and the host does not flow")
	}
	e.must("rm", "-f", "rogue", "calm", "keen")
	e.must("network", "rm", "bridge", "other")
}

// bridgeOf is a network's bridge as `network inspect` reports it.
func (e *env) bridgeOf(network string) string {
	e.t.Helper()
	var ns []struct {
		Bridge string `json:"bridge"`
	}
	e.decode(e.must("network", "inspect", "--format", "json", network), &ns)
	if len(ns) != 1 || ns[0].Bridge == "" {
		e.t.Fatalf("network inspect %s: %+v", network, ns)
	}
	return ns[0].Bridge
}

const neighbourAdvertScript = `
import sys
from scapy.all import Ether, IPv6, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, conf, get_if_hwaddr, sendp
from scapy.utils6 import in6_mactoifaceid
conf.verb = 0
iface, target, lladdr = sys.argv[1:4]
mac = get_if_hwaddr(iface)
na = Ether(src=mac, dst="33:33:00:00:00:01") / \
    IPv6(src="fe80::" + in6_mactoifaceid(mac), dst="ff02::1", hlim=255) / \
    ICMPv6ND_NA(tgt=target, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=lladdr)
sendp(na, iface=iface, count=3)
`

// linkLocal is the EUI-64 link-local address the kernel gives an interface with mac.
func linkLocal(t *testing.T, mac string) string {
	m, err := net.ParseMAC(mac)
	if err != nil || len(m) != 6 {
		t.Fatalf("MAC %q: %v", mac, err)
	}
	a := [16]byte{0: 0xfe, 1: 0x80, 8: m[0] ^ 2, 9: m[1], 10: m[2], 11: 0xff, 12: 0xfe, 13: m[3], 14: m[4], 15: m[5]}
	return netip.AddrFrom16(a).String()
}

// A container's unsolicited neighbour advertisements, claiming the link-local
// address of the host's bridge or of another container, rewrite nobody's neighbour
// entry: not the host's (its bridge has no IPv6), not that of a container that
// turned IPv6 on for itself. The same advertisement sent into the bridge by the host
// does rewrite the container's entry, so the forgery works where ctnet lets it.
func TestNeighbourSpoofing(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "liar", "--", "sleep", "600")
	e.runDetached("--name", "trust", "--", "sleep", "600")
	liar, trust := e.inspect("liar").Networks[0], e.inspect("trust").Networks[0]
	liarMAC := macOf(t, e.containerRun("liar"), "eth0")
	trustMAC := macOf(t, e.containerRun("trust"), "eth0")
	bridgeMAC := macOf(t, e.hostRun, "ctnet0")
	gatewayLL, trustLL := linkLocal(t, bridgeMAC), linkLocal(t, trustMAC)
	if out, err := e.inContainer("trust", "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"); err != nil {
		t.Fatalf("turn IPv6 on in trust: %v: %s", err, out)
	}
	// Unsolicited advertisements only update entries a node already has.
	trustKnowsGateway := func() {
		if out, err := e.inContainer("trust", "ip", "-6", "neigh", "replace", gatewayLL, "lladdr", bridgeMAC, "dev", "eth0", "nud", "stale"); err != nil {
			t.Fatalf("give trust a neighbour entry for the gateway: %v: %s", err, out)
		}
	}
	trustKnowsGateway()
	// Only while the bridge has IPv6 can the host hold an entry a container could rewrite.
	e.hostRun("ip", "-6", "neigh", "replace", trustLL, "lladdr", trustMAC, "dev", "ctnet0", "nud", "stale")
	entry := func(run func(...string) (string, error), addr, dev string) string {
		out, _ := run("ip", "-6", "neigh", "show", addr, "dev", dev)
		return strings.TrimSpace(out)
	}

	if err := scapy(e.hostRun, neighbourAdvertScript, "ctnet0", gatewayLL, liarMAC); err != nil {
		t.Fatal(err)
	}
	if !eventually(func() bool { return strings.Contains(entry(e.containerRun("trust"), gatewayLL, "eth0"), liarMAC) }) {
		t.Fatalf("the forged advertisement does not rewrite trust's entry even from the bridge itself: the test proves nothing (%s)",
			entry(e.containerRun("trust"), gatewayLL, "eth0"))
	}
	trustKnowsGateway()

	sent := newCounters(t, e.hostRun, "bridge", "type filter hook prerouting priority -300;", map[string]string{
		"advertisements": "iifname " + liar.HostVeth + " icmpv6 type nd-neighbor-advert",
	})
	for _, target := range []string{gatewayLL, trustLL} {
		if err := scapy(e.containerRun("liar"), neighbourAdvertScript, "eth0", target, liarMAC); err != nil {
			t.Fatal(err)
		}
	}
	if sent.packets("advertisements") == 0 {
		t.Fatalf("liar's advertisements never reached its bridge port: the test proves nothing")
	}
	time.Sleep(500 * time.Millisecond)
	if got := entry(e.containerRun("trust"), gatewayLL, "eth0"); !strings.Contains(got, bridgeMAC) {
		t.Errorf("trust's entry for the gateway's %s was rewritten: %s (liar is %s)", gatewayLL, got, liarMAC)
	}
	if out, _ := e.hostRun("ip", "-6", "neigh", "show", "dev", "ctnet0"); strings.Contains(out, liarMAC) {
		t.Errorf("the host has a neighbour entry pointing at liar's %s:\n%s", liarMAC, out)
	}
	if !pingOK(e.containerRun("trust"), trust.Gateway) || !pingOK(e.hostRun, trust.IP) || !pingOK(e.hostRun, liar.IP) {
		t.Errorf("IPv4 between the containers and the host does not flow")
	}
	e.must("rm", "-f", "liar", "trust")
	e.must("network", "rm", "bridge")
}

var etherRE = regexp.MustCompile(`link/ether ([0-9a-f:]{17})`)

// macOf reads an interface's MAC with ip.
func macOf(t *testing.T, run func(...string) (string, error), iface string) string {
	t.Helper()
	out, err := run("ip", "-o", "link", "show", "dev", iface)
	m := etherRE.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("MAC of %s: %v: %s", iface, err, out)
	}
	return m[1]
}

const icmpErrorScript = `
import sys
from scapy.all import IP, ICMP, TCP, UDP, conf, send
conf.verb = 0
dst, proto, inner_src, inner_sport, inner_dst, inner_dport = sys.argv[1:7]
l4 = {"tcp": TCP, "udp": UDP}[proto]
send(IP(dst=dst) / ICMP(type=3, code=3) /
     IP(src=inner_src, dst=inner_dst) / l4(sport=int(inner_sport), dport=int(inner_dport)), count=3)
`

// An ICMP error sent to the host's address and quoting a flow of another network's
// container, as the flow looks on the uplink, is not delivered into that network:
// isolation between networks comes before conntrack's "related". Two flows are
// quoted: the victim's masqueraded UDP flow to the wan, and the wan's TCP connection
// to the victim's published port. The same errors from the wan, where such errors
// legitimately come from, are delivered before and after the attack (so each flow is
// alive throughout), and a container of the attacker's network still reaches the
// victim's published port through the host, a connection that crosses networks.
func TestICMPErrorsAcrossNetworks(t *testing.T) {
	e := newEnv(t)
	const peer = "SYSTEM:echo $SOCAT_PEERADDR $SOCAT_PEERPORT"
	srv := e.wan.Command(t.Context(), "socat", "UDP-RECVFROM:9999,fork,reuseaddr", peer)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	e.must("network", "create", "red", "--subnet", "10.97.0.0/24")
	e.runDetached("--name", "victim", "-p", "8080:8000", "--", "socat", "TCP-LISTEN:8000,fork,reuseaddr", peer)
	e.runDetached("--name", "attacker", "--network", "red", "--", "sleep", "600")
	attackerIP := e.ip("attacker")

	if !eventually(func() bool { return askPeer(e.containerRun("attacker"), lab.HostUplinkIP, 8080) != "" }) {
		t.Fatalf("a container of another network does not reach the victim's published port through the host")
	}
	// seenAs makes a flow and returns the address and port its far end saw.
	seenAs := func(what string, run func(...string) (string, error), cmd string) (addr, port string) {
		var out string
		if !eventually(func() bool {
			o, err := run("sh", "-c", cmd)
			out = strings.TrimSpace(o)
			return err == nil && out != ""
		}) {
			t.Fatalf("%s gets no answer", what)
		}
		addr, port, _ = strings.Cut(out, " ")
		return addr, port
	}
	udpFrom, udpPort := seenAs("the victim's UDP flow to the wan", e.containerRun("victim"), "echo hi | socat -T2 - UDP:"+lab.WANIP+":9999,sourceport=40000")
	if udpFrom != lab.HostUplinkIP || udpPort == "" {
		t.Fatalf("the wan saw the victim's flow from %s %s, want %s and a port", udpFrom, udpPort, lab.HostUplinkIP)
	}
	tcpFrom, tcpPort := seenAs("the wan's connection to the published port", e.wanRun, "socat -T2 - TCP:"+lab.HostUplinkIP+":8080 </dev/null")
	if tcpFrom != lab.WANIP || tcpPort == "" {
		t.Fatalf("the victim saw the wan's connection from %s %s, want %s and a port", tcpFrom, tcpPort, lab.WANIP)
	}
	flows := []struct {
		what  string
		quote []string // protocol, source, source port, destination, destination port
	}{
		{"the victim's masqueraded UDP flow to the wan", []string{"udp", lab.HostUplinkIP, udpPort, lab.WANIP, "9999"}},
		{"the wan's TCP connection to the victim's published port", []string{"tcp", lab.HostUplinkIP, "8080", lab.WANIP, tcpPort}},
	}

	received := newCounters(t, e.namespaceOf("victim"), "netdev", "type filter hook ingress device eth0 priority 0;", map[string]string{
		"errors": "icmp type destination-unreachable",
	})
	arrived := newCounters(t, e.hostRun, "ip", "type filter hook prerouting priority -400;", map[string]string{
		"forged": "ip saddr " + attackerIP + " icmp type destination-unreachable",
	})
	for _, f := range flows {
		errorFor := append([]string{lab.HostUplinkIP}, f.quote...)
		fromWAN := func(when string) {
			baseline := received.packets("errors")
			if !eventually(func() bool {
				if err := scapy(e.wanRun, icmpErrorScript, errorFor...); err != nil {
					t.Fatal(err)
				}
				return received.packets("errors") > baseline
			}) {
				t.Fatalf("%s, %s: the wan's ICMP error is not delivered to the victim: the test proves nothing", f.what, when)
			}
		}
		fromWAN("before the attack")
		time.Sleep(200 * time.Millisecond) // the last of the wan's errors
		before, forged := received.packets("errors"), arrived.packets("forged")
		if err := scapy(e.containerRun("attacker"), icmpErrorScript, errorFor...); err != nil {
			t.Fatal(err)
		}
		if arrived.packets("forged") == forged {
			t.Fatalf("%s: the attacker's ICMP errors never reached the host: the test proves nothing", f.what)
		}
		time.Sleep(500 * time.Millisecond)
		if n := received.packets("errors") - before; n > 0 {
			t.Errorf("%s: the victim received %d ICMP errors forged by a container of another network", f.what, n)
		}
		fromWAN("after the attack")
	}

	if got := askPeer(e.containerRun("attacker"), lab.HostUplinkIP, 8080); got == "" {
		t.Errorf("the victim's published port no longer answers the other network's container")
	}
	e.must("rm", "-f", "victim", "attacker")
	e.must("network", "rm", "bridge", "red")
}
