package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/miekg/dns"
)

// Attacks that ctnet already withstood when issue 10 was filed, kept as tests so that
// they go on failing: each one is performed with real packets, beside a positive
// control that shows the same probe succeeds where it is allowed.

// frameScript sends the Ethernet frames described by its arguments (see arpFrame
// and udpFrame) out of the interface named first, in order.
const frameScript = `
import sys
from scapy.layers.l2 import Ether, ARP
from scapy.layers.inet import IP, UDP
from scapy.sendrecv import sendp
frames = []
for spec in sys.argv[2:]:
    kind, *f = spec.split(",")
    if kind == "arp":
        esrc, edst, op, hwsrc, psrc, hwdst, pdst = f
        frames.append(Ether(src=esrc, dst=edst) / ARP(op=int(op), hwsrc=hwsrc, psrc=psrc, hwdst=hwdst, pdst=pdst))
    else:
        esrc, edst, src, dst, port, payload = f
        frames.append(Ether(src=esrc, dst=edst) / IP(src=src, dst=dst) / UDP(sport=4444, dport=int(port)) / payload.encode())
sendp(frames, iface=sys.argv[1], verbose=False)
`

const (
	broadcastMAC = "ff:ff:ff:ff:ff:ff"
	zeroMAC      = "00:00:00:00:00:00"
	arpRequest   = 1
	arpReply     = 2
)

func arpFrame(etherSrc, etherDst string, op int, senderMAC, senderIP, targetMAC, targetIP string) string {
	return fmt.Sprintf("arp,%s,%s,%d,%s,%s,%s,%s", etherSrc, etherDst, op, senderMAC, senderIP, targetMAC, targetIP)
}

func udpFrame(etherSrc, etherDst, src, dst string, port int, payload string) string {
	return fmt.Sprintf("udp,%s,%s,%s,%s,%d,%s", etherSrc, etherDst, src, dst, port, payload)
}

// networkInfo is the part of `ctnet network inspect --format json` the tests read.
type networkInfo struct {
	Bridge     string `json:"bridge"`
	Gateway    string `json:"gateway"`
	Containers []struct {
		Name     string `json:"name"`
		HostVeth string `json:"host_veth"`
		IP       string `json:"ip"`
		MAC      string `json:"mac"`
	} `json:"containers"`
}

func (e *env) network(name string) networkInfo {
	e.t.Helper()
	var ns []networkInfo
	e.decode(e.must("network", "inspect", "--format", "json", name), &ns)
	if len(ns) != 1 {
		e.t.Fatalf("network inspect %s: %d networks", name, len(ns))
	}
	return ns[0]
}

// linkMAC reads an interface's MAC with iproute2.
func linkMAC(t *testing.T, run func(args ...string) (string, error), dev string) string {
	t.Helper()
	out, err := run("ip", "-j", "link", "show", "dev", dev)
	if err != nil {
		t.Fatalf("ip link show %s: %v: %s", dev, err, out)
	}
	var links []struct{ Address string }
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip link show %s: %q: %v", dev, out, err)
	}
	return links[0].Address
}

// neighMAC is the link-layer address a namespace's neighbour table holds for ip on
// dev, "" when it holds none.
func neighMAC(t *testing.T, run func(args ...string) (string, error), dev, ip string) string {
	t.Helper()
	out, err := run("ip", "-j", "neigh", "show", ip, "dev", dev)
	if err != nil {
		t.Fatalf("ip neigh show %s: %v: %s", ip, err, out)
	}
	var entries []struct{ Lladdr string }
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("ip neigh show %s: %q: %v", ip, out, err)
	}
	if len(entries) == 0 {
		return ""
	}
	return entries[0].Lladdr
}

// A container forges ARP to take over the victim's or the gateway's address in the
// host's and the victim's neighbour tables, and forges its Ethernet source to take
// the victim's MAC in the bridge's forwarding table: none of it takes. Positive
// controls: the same kind of frame, about the forger's own address and MAC, does
// rewrite the receiver's entry for the forger (planted wrong before) and does teach
// the bridge, and a frame from its own MAC reaches the victim.
func TestARPAndMACSpoofing(t *testing.T) {
	e := newEnv(t)
	logs := t.TempDir()
	victimLog, hostLog := logs+"/victim", logs+"/host"
	e.runDetached("--name", "forger", "--", "sleep", "600")
	e.runDetached("--name", "victim", "--", "socat", "-u", "UDP-RECV:5555", "CREATE:"+victimLog)
	hostRecv := e.host.Command(t.Context(), "socat", "-u", "UDP-RECV:5556", "CREATE:"+hostLog)
	if err := hostRecv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { hostRecv.Process.Kill(); hostRecv.Wait() }()

	n := e.network("bridge")
	bridge, gw := n.Bridge, n.Gateway
	var fIP, fMAC, fVeth, vIP, vMAC, vVeth string
	for _, c := range n.Containers {
		switch c.Name {
		case "forger":
			fIP, fMAC, fVeth = c.IP, c.MAC, c.HostVeth
		case "victim":
			vIP, vMAC, vVeth = c.IP, c.MAC, c.HostVeth
		}
	}
	bMAC := linkMAC(t, e.hostRun, bridge)
	const plantedMAC, strangerMAC, unassignedIP = "02:00:00:00:be:ef", "02:00:00:00:00:66", "172.17.0.99"

	// Without a lock time every frame that gets through rewrites an entry at once.
	e.host.MustRun(t, "sysctl", "-qw", "net.ipv4.neigh."+bridge+".locktime=0")
	if out, err := e.inContainer("victim", "sysctl", "-qw", "net.ipv4.neigh.eth0.locktime=0"); err != nil {
		t.Fatalf("victim's lock time: %v: %s", err, out)
	}
	// The entries the attacks go for exist, right, before them.
	for _, p := range []struct {
		from string
		run  func(args ...string) (string, error)
		to   string
	}{
		{"the host", e.hostRun, vIP}, {"the host", e.hostRun, fIP},
		{"the victim", e.containerRun("victim"), gw}, {"the victim", e.containerRun("victim"), fIP},
	} {
		if !eventually(func() bool { return pingOK(p.run, p.to) }) {
			t.Fatalf("%s cannot ping %s", p.from, p.to)
		}
	}

	send := func(frames ...string) {
		t.Helper()
		args := append(append(lab.InNetNS(e.inspect("forger").NetNS), "/usr/bin/python3", "-c", frameScript, "eth0"), frames...)
		if out, err := e.host.Try(args...); err != nil {
			t.Fatalf("send frames: %v: %s", err, out)
		}
	}
	logged := func(file, payload string) bool {
		out, _ := e.host.Try("cat", file)
		return strings.Contains(out, payload)
	}
	type receiver struct {
		name, dev string
		run       func(args ...string) (string, error)
		// sentinel is a frame from the forger's own addresses to the receiver's UDP
		// listener, sent after the forged ones: once it is logged they were handled.
		sentinel func(tag string) string
		log      string
	}
	host := receiver{"the host", bridge, e.hostRun,
		func(tag string) string { return udpFrame(fMAC, bMAC, fIP, gw, 5556, tag) }, hostLog}
	victim := receiver{"the victim", "eth0", e.containerRun("victim"),
		func(tag string) string { return udpFrame(fMAC, vMAC, fIP, vIP, 5555, tag) }, victimLog}

	cases := []struct {
		name    string
		to      receiver
		forged  string
		control string // the same kind of frame about the forger's own address
		// The entry the forged frame goes for, and what it must keep holding.
		watchIP, wantMAC string
	}{
		{"gratuitous ARP claiming the victim's address", host,
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, vIP, zeroMAC, vIP),
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, fIP, zeroMAC, fIP), vIP, vMAC},
		{"gratuitous ARP claiming the gateway's address", victim,
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, gw, zeroMAC, gw),
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, fIP, zeroMAC, fIP), gw, bMAC},
		{"gratuitous ARP reply claiming the gateway's address", victim,
			arpFrame(fMAC, broadcastMAC, arpReply, fMAC, gw, fMAC, gw),
			arpFrame(fMAC, broadcastMAC, arpReply, fMAC, fIP, fMAC, fIP), gw, bMAC},
		{"ARP reply to the victim claiming the gateway's address", victim,
			arpFrame(fMAC, vMAC, arpReply, fMAC, gw, vMAC, vIP),
			arpFrame(fMAC, vMAC, arpReply, fMAC, fIP, vMAC, vIP), gw, bMAC},
		{"ARP reply to the host claiming the victim's address", host,
			arpFrame(fMAC, bMAC, arpReply, fMAC, vIP, bMAC, gw),
			arpFrame(fMAC, bMAC, arpReply, fMAC, fIP, bMAC, gw), vIP, vMAC},
		{"ARP request to the host from the victim's address", host,
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, vIP, zeroMAC, gw),
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, fIP, zeroMAC, gw), vIP, vMAC},
		{"ARP request to the host from an unassigned address", host,
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, unassignedIP, zeroMAC, gw),
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, fIP, zeroMAC, gw), unassignedIP, ""},
		{"ARP of the forger's own address with another MAC as sender", host,
			arpFrame(fMAC, broadcastMAC, arpRequest, strangerMAC, fIP, zeroMAC, fIP),
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, fIP, zeroMAC, fIP), fIP, fMAC},
		{"ARP of the forger's own address with another MAC as sender", victim,
			arpFrame(fMAC, broadcastMAC, arpRequest, strangerMAC, fIP, zeroMAC, fIP),
			arpFrame(fMAC, broadcastMAC, arpRequest, fMAC, fIP, zeroMAC, fIP), fIP, fMAC},
	}
	for i, c := range cases {
		what := fmt.Sprintf("%s, to %s", c.name, c.to.name)
		if out, err := c.to.run("ip", "neigh", "replace", fIP, "lladdr", plantedMAC, "dev", c.to.dev, "nud", "stale"); err != nil {
			t.Fatalf("plant a wrong entry for the forger in %s: %v: %s", c.to.name, err, out)
		}
		send(c.control)
		if !eventually(func() bool { return neighMAC(t, c.to.run, c.to.dev, fIP) == fMAC }) {
			t.Errorf("%s: the control frame did not correct the entry for the forger: the probe tells nothing", what)
			continue
		}
		tag := fmt.Sprintf("arp-sentinel-%d", i)
		send(c.forged, c.forged, c.forged, c.to.sentinel(tag))
		if !eventually(func() bool { return logged(c.to.log, tag) }) {
			t.Fatalf("%s: the sentinel after the forged frames never arrived", what)
		}
		if got := neighMAC(t, c.to.run, c.to.dev, c.watchIP); got != c.wantMAC {
			t.Errorf("%s: %s's entry for %s is %q, want %q", what, c.to.name, c.watchIP, got, c.wantMAC)
		}
	}

	// MAC spoofing: frames from the victim's MAC and from a made-up one, out of the
	// forger's port, then from its own MAC. The bridge learns sources after ctnet's
	// hook, so it relearns the forger's MAC (deleted first) but must never learn the
	// other two there; only the honest datagrams arrive.
	const madeUpMAC = "02:00:00:00:00:77"
	e.host.MustRun(t, "bridge", "fdb", "del", fMAC, "dev", fVeth, "master")
	send(udpFrame(vMAC, bMAC, fIP, gw, 5556, "from-victim-mac"),
		udpFrame(madeUpMAC, vMAC, fIP, vIP, 5555, "from-made-up-mac"),
		udpFrame(fMAC, bMAC, fIP, gw, 5556, "from-own-mac"),
		udpFrame(fMAC, vMAC, fIP, vIP, 5555, "from-own-mac"))
	if !eventually(func() bool { return logged(hostLog, "from-own-mac") }) {
		t.Fatalf("control: a datagram from the forger's own MAC never reached the host")
	}
	fdb := bridgeFDB(t, e, bridge)
	if fdb[fMAC] != fVeth {
		t.Errorf("control: the bridge did not relearn the forger's MAC on its port (fdb has it on %q): the probe tells nothing", fdb[fMAC])
	}
	if fdb[vMAC] != vVeth {
		t.Errorf("the victim's MAC is on port %q of the bridge, want the victim's %s", fdb[vMAC], vVeth)
	}
	if port, ok := fdb[madeUpMAC]; ok {
		t.Errorf("the bridge learned a made-up source MAC on port %s", port)
	}
	if logged(hostLog, "from-victim-mac") {
		t.Errorf("a frame from the victim's MAC out of the forger's port reached the host")
	}
	if !eventually(func() bool { return logged(victimLog, "from-own-mac") }) {
		t.Errorf("a datagram from the forger's own MAC to the victim's never reached the victim")
	} else if logged(victimLog, "from-made-up-mac") {
		t.Errorf("a frame from a made-up MAC reached the victim")
	}
	e.must("rm", "-f", "forger", "victim")
	e.must("network", "rm", "bridge")
}

// bridgeFDB maps each MAC the bridge has learned to its port.
func bridgeFDB(t *testing.T, e *env, bridge string) map[string]string {
	t.Helper()
	out, err := e.hostRun("bridge", "-j", "fdb", "show", "br", bridge)
	if err != nil {
		t.Fatalf("bridge fdb show: %v: %s", err, out)
	}
	var entries []struct {
		MAC    string `json:"mac"`
		Ifname string `json:"ifname"`
		Flags  []string
		State  string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("bridge fdb show: %q: %v", out, err)
	}
	learned := map[string]string{}
	for _, en := range entries {
		if en.State != "permanent" && en.Ifname != bridge {
			learned[en.MAC] = en.Ifname
		}
	}
	return learned
}

// The wan routes the container subnets to the host's uplink and opens TCP, UDP and
// ICMP to containers of masqueraded networks (the default one and a user one): none
// gets in. Positive controls: the same probes reach a container of a routed network
// (masquerade off), and the masqueraded container's published port answers the wan.
func TestWANCannotRouteIntoMasqueradedNetworks(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "hidden", "--subnet", "10.94.0.0/24")
	e.must("network", "create", "routed", "--subnet", "10.95.0.0/24", "--opt", "masquerade=false")
	servers := "socat TCP-LISTEN:7000,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & " +
		"socat UDP-RECVFROM:7001,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & wait"
	e.runDetached("--name", "plain", "--", "sh", "-c", servers)
	e.runDetached("--name", "hidden", "--network", "hidden", "-p", "8070:7000", "--", "sh", "-c", servers)
	e.runDetached("--name", "routed", "--network", "routed", "--", "sh", "-c", servers)
	for _, subnet := range []string{"172.17.0.0/16", "10.94.0.0/24", "10.95.0.0/24"} {
		e.wan.MustRun(t, "ip", "route", "add", subnet, "via", lab.HostUplinkIP)
	}
	for _, name := range []string{"plain", "hidden", "routed"} {
		ip := e.ip(name)
		if !eventually(func() bool { return askPeer(e.hostRun, ip, 7000) != "" && askPeerUDP(e.hostRun, ip, 7001) != "" }) {
			t.Fatalf("%s's servers do not answer the host", name)
		}
	}
	routed := e.ip("routed")
	if got := askPeer(e.wanRun, routed, 7000); got != lab.WANIP {
		t.Errorf("control: TCP from the wan to the routed container: server saw %q, want %s", got, lab.WANIP)
	}
	if got := askPeerUDP(e.wanRun, routed, 7001); got != lab.WANIP {
		t.Errorf("control: UDP from the wan to the routed container: server saw %q, want %s", got, lab.WANIP)
	}
	if !pingOK(e.wanRun, routed) {
		t.Errorf("control: the wan cannot ping the routed container")
	}
	if got := askPeer(e.wanRun, lab.HostUplinkIP, 8070); got != lab.WANIP {
		t.Errorf("control: the hidden container's published port from the wan: server saw %q, want %s", got, lab.WANIP)
	}
	for _, name := range []string{"plain", "hidden"} {
		ip := e.ip(name)
		if got := askPeer(e.wanRun, ip, 7000); got != "" {
			t.Errorf("TCP from the wan reached %s's container at %s directly (seen as %s)", name, ip, got)
		}
		if got := askPeerUDP(e.wanRun, ip, 7001); got != "" {
			t.Errorf("UDP from the wan reached %s's container at %s directly (seen as %s)", name, ip, got)
		}
		if pingOK(e.wanRun, ip) {
			t.Errorf("the wan pings %s's container at %s directly", name, ip)
		}
	}
	e.must("rm", "-f", "plain", "hidden", "routed")
	e.must("network", "rm", "bridge", "hidden", "routed")
}

// recordingResolver answers every A query with one address and remembers the names
// it was asked.
type recordingResolver struct {
	mu    sync.Mutex
	names []string
}

func (r *recordingResolver) serve(pc net.PacketConn, addr string) {
	answerDNS(pc, addr, func(q dns.Question) bool {
		r.mu.Lock()
		r.names = append(r.names, strings.ToLower(q.Name))
		r.mu.Unlock()
		return q.Qtype == dns.TypeA
	})
}

// asked reports whether any query for a name under domain reached the resolver.
func (r *recordingResolver) asked(domain string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.names {
		if strings.HasSuffix(n, domain+".") {
			return true
		}
	}
	return false
}

// udpQueryScript asks the DNS server argv[1] over UDP for the A record of argv[2] and
// prints the address of the answer's last record.
const udpQueryScript = `
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x4343, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[2].split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (sys.argv[1], 53))
print(socket.inet_ntoa(s.recv(512)[-4:]))
`

// A container of an --internal network given a resolver in the wan (--dns) gets no
// name of the outside world: its embedded DNS server forwards nothing (it forwards
// from the host's namespace, where the internal network's firewall does not apply,
// so only its empty upstream list stops it), and asking the resolver itself goes
// nowhere. Positive controls: the same container resolves its network's names, and a
// container of an ordinary network with the same --dns gets the resolver's answers
// both ways.
func TestInternalNetworkDNSDoesNotForward(t *testing.T) {
	e := newEnv(t)
	resolver := &recordingResolver{}
	go resolver.serve(e.wan.ListenUDP(t, lab.WANIP+":53"), "198.51.100.77")
	e.must("network", "create", "open")
	e.must("network", "create", "sealed", "--internal")
	e.runDetached("--name", "outside", "--network", "open", "--dns", lab.WANIP, "--", "sleep", "600")
	e.runDetached("--name", "inside", "--network", "sealed", "--dns", lab.WANIP, "--", "sleep", "600")
	e.runDetached("--name", "neighbour", "--network", "sealed", "--", "sleep", "600")
	lookup := func(from, name string) string {
		r := e.ctnet("exec", from, "--", "getent", "ahostsv4", name)
		if r.Code != 0 || r.Stdout == "" {
			return ""
		}
		return strings.Fields(r.Stdout)[0]
	}
	direct := func(from, name string) string {
		out, err := e.inContainer(from, "/usr/bin/python3", "-c", udpQueryScript, lab.WANIP, name)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(out)
	}
	if got, want := lookup("inside", "neighbour"), e.ip("neighbour"); got != want {
		t.Errorf("control: inside resolving its network's neighbour: got %q, want %q", got, want)
	}
	if got := lookup("outside", "via-embedded.outside.test"); got != "198.51.100.77" || !resolver.asked("outside.test") {
		t.Errorf("control: outside resolving through its embedded server: got %q, want the wan resolver's 198.51.100.77", got)
	}
	if got := direct("outside", "direct.outside.test"); got != "198.51.100.77" {
		t.Errorf("control: outside asking the wan resolver itself: got %q, want 198.51.100.77", got)
	}
	if got := lookup("inside", "via-embedded.inside.test"); got != "" {
		t.Errorf("inside, on an internal network, resolved a name of the outside world to %s", got)
	}
	if got := direct("inside", "direct.inside.test"); got != "" {
		t.Errorf("inside, on an internal network, got an answer from the wan resolver: %s", got)
	}
	// Each lookup has returned, so whatever it was forwarded has been asked.
	if resolver.asked("inside.test") {
		t.Errorf("a query of the internal network's container reached the wan resolver")
	}
	e.must("rm", "-f", "outside", "inside", "neighbour")
	e.must("network", "rm", "open", "sealed")
}

// udpFloodScript sends one datagram to every port of argv[1] from each of eight
// sockets, over and over: each is a flow of its own, and nothing answers.
const udpFloodScript = `
import socket, sys
dst = sys.argv[1]
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
while True:
    for port in range(1, 65536):
        for s in socks:
            try:
                s.sendto(b"x", (dst, port))
            except OSError:
                pass
`

// A container floods the wan with UDP flows nothing answers until the host
// namespace's conntrack table is full: nf_conntrack_max is the kernel's (global, and
// read-only in a namespace) but the count is per namespace, so the flood fills the
// host namespace's table, 8 × 65,535 flows against 262,144 entries here. The host,
// another container and the wan through a published port still open new connections
// while it is full, because a new flow evicts one that was never answered (the
// kernel's early drop; answered flows are "assured" and kept). The sandbox's UDP
// timeout is raised so that the flood fills the table whatever its speed and only
// eviction can make room. Positive control: the same connections, before the flood.
func TestUnansweredUDPFloodDoesNotExhaustConntrack(t *testing.T) {
	e := newEnv(t)
	srv := e.wan.Command(t.Context(), peerServer(9999)...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	e.runDetached("--name", "flooder", "--", "sleep", "600")
	e.runDetached(append([]string{"--name", "bystander", "-p", "8080:7000", "--"}, peerServer(7000)...)...)
	conntrack := func(name string) int {
		out, err := e.hostRun("cat", "/proc/sys/net/netfilter/nf_conntrack_"+name)
		n, perr := strconv.Atoi(strings.TrimSpace(out))
		if err != nil || perr != nil {
			t.Fatalf("nf_conntrack_%s: %v %v: %s", name, err, perr, out)
		}
		return n
	}
	e.host.MustRun(t, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600")
	probes := []struct {
		what string
		ok   func() bool
	}{
		{"the host opening a TCP connection to the wan", func() bool { return askPeer(e.hostRun, lab.WANIP, 9999) == lab.HostUplinkIP }},
		{"another container opening a TCP connection to the wan", func() bool {
			return askPeer(e.containerRun("bystander"), lab.WANIP, 9999) == lab.HostUplinkIP
		}},
		{"another container pinging the wan", func() bool { return pingOK(e.containerRun("bystander"), lab.WANIP) }},
		{"the wan connecting to a published port", func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, 8080) == lab.WANIP }},
	}
	for _, p := range probes {
		if !eventually(p.ok) {
			t.Fatalf("control: %s fails before the flood", p.what)
		}
	}
	evictedBefore := earlyDrops(t, e)
	flood := e.host.Command(t.Context(), append(lab.InNetNS(e.inspect("flooder").NetNS), "/usr/bin/python3", "-c", udpFloodScript, lab.WANIP)...)
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { flood.Process.Kill(); flood.Wait() }()
	// Full: the kernel evicts as the flood adds, so the count hovers just below the
	// limit.
	limit := conntrack("max")
	full := limit - limit/100
	start := time.Now()
	deadline := start.Add(3 * time.Minute)
	n := conntrack("count")
	for ; n < full && time.Now().Before(deadline); n = conntrack("count") {
		time.Sleep(time.Second)
	}
	if n < full {
		t.Fatalf("the flood filled the host namespace's conntrack table to %d of %d entries: the test tells nothing", n, limit)
	}
	t.Logf("the flood filled the host namespace's conntrack table to %d of %d entries in %v", n, limit, time.Since(start).Round(time.Millisecond))
	for _, p := range probes {
		if !p.ok() {
			t.Errorf("with the conntrack table full of unanswered flows (%d of %d), %s fails", conntrack("count"), limit, p.what)
		}
	}
	evicted := earlyDrops(t, e) - evictedBefore
	t.Logf("the kernel evicted %d never-answered flows to make room", evicted)
	if evicted == 0 {
		t.Errorf("the kernel evicted no flow: what made room is not what this test assumes")
	}
	flood.Process.Kill()
	flood.Wait()
	e.must("rm", "-f", "flooder", "bystander")
	e.must("network", "rm", "bridge")
}

// earlyDrops is how many unanswered flows the host namespace's conntrack has evicted
// to make room for new ones: the early_drop column of /proc/net/stat/nf_conntrack,
// one hexadecimal line per CPU.
func earlyDrops(t *testing.T, e *env) uint64 {
	t.Helper()
	out, err := e.hostRun("cat", "/proc/net/stat/nf_conntrack")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) < 2 {
		t.Fatalf("/proc/net/stat/nf_conntrack: %v: %s", err, out)
	}
	column := slices.Index(strings.Fields(lines[0]), "early_drop")
	if column < 0 {
		t.Fatalf("/proc/net/stat/nf_conntrack has no early_drop column: %s", lines[0])
	}
	var sum uint64
	for _, line := range lines[1:] {
		n, err := strconv.ParseUint(strings.Fields(line)[column], 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/stat/nf_conntrack: %q: %v", line, err)
		}
		sum += n
	}
	return sum
}
