package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
)

// httpPeerServer is a socat command line for an HTTP server that answers every
// request with the address it sees the client at. The handler is a script file
// because socat's address syntax mangles inline shell.
func httpPeerServer(t *testing.T, port int) []string {
	handler := filepath.Join(t.TempDir(), "peer-address.sh")
	script := `while read -r line && [ "${#line}" -gt 1 ]; do :; done
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n%s\n' "$SOCAT_PEERADDR"
`
	if err := os.WriteFile(handler, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"socat", fmt.Sprintf("TCP-LISTEN:%d,fork,reuseaddr", port), "SYSTEM:sh " + handler}
}

// httpGet fetches http://addr:port/ with curl from the command prefix and returns the
// body, or "" if there was no answer.
func httpGet(run func(args ...string) (string, error), addr string, port int) string {
	out, err := run("curl", "-sf", "-m", "3", fmt.Sprintf("http://%s:%d/", addr, port))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// An HTTP server in a container published with -p 8080:8000 answers a client in the
// wan, the host at 127.0.0.1 and at its own address, another container and itself,
// and records the wan client's real address.
func TestPublishedPortReachability(t *testing.T) {
	e := newEnv(t)
	e.runDetached(append([]string{"--name", "web", "-p", "8080:8000", "--"}, httpPeerServer(t, 8000)...)...)
	e.runDetached("--name", "other", "--", "sleep", "600")
	cases := []struct {
		from, addr string
		run        func(...string) (string, error)
		wantPeer   string // the client address the server must see; "" means any
	}{
		{"the wan", lab.HostUplinkIP, e.wanRun, lab.WANIP},
		{"the host at 127.0.0.1", "127.0.0.1", e.hostRun, ""},
		{"the host at its uplink address", lab.HostUplinkIP, e.hostRun, ""},
		{"another container", lab.HostUplinkIP, e.containerRun("other"), ""},
		{"the container itself", lab.HostUplinkIP, e.containerRun("web"), ""},
	}
	for _, c := range cases {
		var got string
		if !eventually(func() bool { got = httpGet(c.run, c.addr, 8080); return got != "" }) {
			t.Errorf("%s: http://%s:8080/ does not answer", c.from, c.addr)
			continue
		}
		if c.wantPeer != "" && got != c.wantPeer {
			t.Errorf("%s: the server saw the client as %s, want %s", c.from, got, c.wantPeer)
		}
	}
	if out := e.must("port", "web"); !strings.Contains(out, "8000/tcp -> 0.0.0.0:8080") {
		t.Errorf("ctnet port web: %q", out)
	}
	info := e.must("inspect", "web")
	if !regexp.MustCompile(`ports_any: tcp \. 8080 : 172\.17\.0\.\d+ \. 8000`).MatchString(info) {
		t.Errorf("inspect does not show the port's firewall entry:\n%s", info)
	}
	if !strings.Contains(e.must("network", "inspect", "bridge"), `"ctnet0"`) {
		t.Errorf("network inspect shows no firewall entries of the bridge")
	}
	e.must("rm", "-f", "web", "other")
	e.must("network", "rm", "bridge")
}

// Containers reach the wan masqueraded behind the host's address; an internal
// network has no way out, even for a container that adds its own default route while
// the wan routes the internal subnet back to the host: only the firewall stops it.
// Its peer on the same network and its gateway answer it, so the silence is the
// firewall's, not a container without an address or a dead probe.
func TestWayOut(t *testing.T) {
	e := newEnv(t)
	srv := e.wan.Command(t.Context(), peerServer(9999)...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	e.must("network", "create", "sealed", "--internal", "--subnet", "10.94.0.0/24")
	e.wan.MustRun(t, "ip", "route", "add", "10.94.0.0/24", "via", lab.HostUplinkIP)
	e.runDetached("--name", "out", "--", "sleep", "600")
	e.runDetached("--name", "in", "--network", "sealed", "--", "sleep", "600")
	e.runDetached(append([]string{"--name", "peer", "--network", "sealed", "--"}, peerServer(7000)...)...)
	var got string
	if !eventually(func() bool { got = askPeer(e.containerRun("out"), lab.WANIP, 9999); return got != "" }) {
		t.Fatalf("a container cannot reach the wan")
	}
	if got != lab.HostUplinkIP {
		t.Errorf("the wan saw the container as %s, want the host's uplink address %s", got, lab.HostUplinkIP)
	}
	in, inIP := e.containerRun("in"), e.kernelAddr("in", "eth0")
	if out, err := in("ip", "route", "add", "default", "via", "10.94.0.1"); err != nil {
		t.Fatalf("add a default route inside the internal container: %v: %s", err, out)
	}
	if !eventually(func() bool { got = askPeer(in, e.kernelAddr("peer", "eth0"), 7000); return got != "" }) {
		t.Fatalf("a container on an internal network cannot reach its peer there")
	}
	if got != inIP {
		t.Errorf("the peer saw the internal container as %s, want %s", got, inIP)
	}
	if !pingOK(in, "10.94.0.1") {
		t.Errorf("a container on an internal network cannot ping its gateway")
	}
	if got := askPeer(in, lab.WANIP, 9999); got != "" {
		t.Errorf("a container on an internal network reached the wan (seen as %s)", got)
	}
	if pingOK(in, lab.WANIP) {
		t.Errorf("a container on an internal network pings the wan")
	}
	e.must("rm", "-f", "out", "in", "peer")
	e.must("network", "rm", "bridge", "sealed")
}

// UDP publishing, port ranges, and a 127.0.0.1 binding that only the host reaches.
func TestUDPRangesAndLoopbackBinding(t *testing.T) {
	e := newEnv(t)
	server := "socat UDP-RECVFROM:53,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & " +
		"for p in 7100 7101 7102; do socat TCP-LISTEN:$p,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & done; " +
		"socat TCP-LISTEN:8000,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & wait"
	e.runDetached("--name", "multi", "-p", "5353:53/udp", "-p", "9100-9102:7100-7102", "-p", "127.0.0.1:8081:8000", "--", "sh", "-c", server)
	var got string
	if !eventually(func() bool { got = askPeerUDP(e.wanRun, lab.HostUplinkIP, 5353); return got != "" }) {
		t.Errorf("UDP port 5353 does not answer from the wan")
	} else if got != lab.WANIP {
		t.Errorf("UDP: the server saw %s, want %s", got, lab.WANIP)
	}
	for port := 9100; port <= 9102; port++ {
		if !eventually(func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, port) != "" }) {
			t.Errorf("port %d of the published range does not answer", port)
		}
	}
	if !eventually(func() bool { return askPeer(e.hostRun, "127.0.0.1", 8081) != "" }) {
		t.Errorf("127.0.0.1:8081 does not answer from the host")
	}
	if got := askPeer(e.wanRun, lab.HostUplinkIP, 8081); got != "" {
		t.Errorf("a 127.0.0.1 binding answered from the wan")
	}
	// The wan's own local table would keep 127.0.0.1: it must send the probe for real.
	if err := routeLoopbackVia(e.wanRun, "wan0", lab.HostUplinkIP); err != nil {
		t.Fatal(err)
	}
	if got := askPeer(e.wanRun, "127.0.0.1", 8081); got != "" {
		t.Errorf("a 127.0.0.1 binding answered the wan routing 127.0.0.1 to the host")
	}
	e.must("rm", "-f", "multi")
	e.must("network", "rm", "bridge")
}

// Containers on different networks cannot reach each other by any protocol.
func TestIsolationBetweenNetworks(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "red", "--subnet", "10.91.0.0/24")
	e.must("network", "create", "blue", "--subnet", "10.92.0.0/24")
	for _, c := range []struct{ name, net string }{{"r", "red"}, {"b", "blue"}} {
		e.runDetached("--name", c.name, "--network", c.net, "--", "sh", "-c",
			"socat TCP-LISTEN:7000,fork,reuseaddr 'SYSTEM:echo hi' & socat UDP-RECVFROM:7001,fork,reuseaddr 'SYSTEM:echo hi' & wait")
	}
	ips := map[string]string{"r": e.kernelAddr("r", "eth0"), "b": e.kernelAddr("b", "eth0")}
	gateways := map[string]string{"r": "10.91.0.1", "b": "10.92.0.1"}
	// Each container answers the host by every protocol and reaches its own gateway
	// first, so silence below is isolation, not a dead server or probe.
	for name := range ips {
		if !eventually(func() bool { return askPeer(e.hostRun, ips[name], 7000) != "" }) {
			t.Fatalf("%s's server does not answer the host", name)
		}
		if !eventually(func() bool { return askPeerUDP(e.hostRun, ips[name], 7001) != "" }) {
			t.Errorf("%s's UDP server does not answer the host", name)
		}
		if !pingOK(e.hostRun, ips[name]) {
			t.Errorf("the host cannot ping %s", name)
		}
		if !pingOK(e.containerRun(name), gateways[name]) {
			t.Errorf("%s cannot ping its gateway %s", name, gateways[name])
		}
	}
	for _, dir := range []struct{ from, to string }{{"r", "b"}, {"b", "r"}} {
		run := e.containerRun(dir.from)
		if got := askPeer(run, ips[dir.to], 7000); got != "" {
			t.Errorf("TCP from %s to %s got through", dir.from, dir.to)
		}
		if got := askPeerUDP(run, ips[dir.to], 7001); got != "" {
			t.Errorf("UDP from %s to %s got through", dir.from, dir.to)
		}
		if pingOK(run, ips[dir.to]) {
			t.Errorf("ICMP from %s to %s got through", dir.from, dir.to)
		}
	}
	e.must("rm", "-f", "r", "b")
	e.must("network", "rm", "red", "blue")
}

const spoofScript = `
import socket, struct, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = b"probe-from-" + src.encode()
udp = struct.pack("!HHHH", 4444, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3):
    s.sendto(ip + udp, (dst, 0))
`

// Packets a container forges with another source address never reach the bridge's
// other ports or the wan; the same packets with its own source do (so the probe
// works). Each forged source is one the receiver's kernel takes (the sandboxes'
// reverse-path filters are off; no receiver is sent its own address), so only ctnet
// can drop it: to the wan, the victim's address, which the masquerade would rewrite
// to the host's as it does the forger's own.
func TestAntiSpoofing(t *testing.T) {
	e := newEnv(t)
	for _, key := range []string{"all", "default", "uplink0"} {
		e.host.Sysctl(t, "net.ipv4.conf."+key+".rp_filter", "0")
	}
	for _, key := range []string{"all", "wan0"} {
		e.wan.Sysctl(t, "net.ipv4.conf."+key+".rp_filter", "0")
	}
	e.runDetached("--name", "forger", "--", "sleep", "600")
	e.runDetached("--name", "victim", "--", "socat", "-u", "UDP-RECV:5555", "STDOUT")
	forger, victim := e.ip("forger"), e.ip("victim")
	wanLog := t.TempDir() + "/wan"
	wanRecv := e.wan.Command(t.Context(), "socat", "-u", "UDP-RECV:5555", "CREATE:"+wanLog)
	if err := wanRecv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { wanRecv.Process.Kill(); wanRecv.Wait() }()
	victimSaw := func(src string) bool {
		return strings.Contains(e.ctnet("logs", "victim").Stdout, "probe-from-"+src)
	}
	wanSaw := func(src string) bool {
		out, _ := e.host.Try("cat", wanLog)
		return strings.Contains(out, "probe-from-"+src)
	}
	send := func(src, dst string) {
		if out, err := e.inContainer("forger", "python3", "-c", spoofScript, src, dst, "5555"); err != nil {
			t.Fatalf("send raw packet: %v: %s", err, out)
		}
	}
	// Sent again until both arrive: the receivers may still be binding.
	if !eventually(func() bool {
		if !victimSaw(forger) {
			send(forger, victim)
		}
		if !wanSaw(forger) {
			send(forger, lab.WANIP)
		}
		return victimSaw(forger) && wanSaw(forger)
	}) {
		t.Fatalf("the unforged probes did not arrive: the test cannot tell anything")
	}
	toVictim := []string{"172.17.0.99", lab.WANIP, "10.1.2.3"}
	toWAN := []string{"172.17.0.99", victim, "10.1.2.3"}
	for _, forged := range toVictim {
		send(forged, victim)
	}
	for _, forged := range toWAN {
		send(forged, lab.WANIP)
	}
	time.Sleep(time.Second)
	for _, forged := range toVictim {
		if victimSaw(forged) {
			t.Errorf("a packet forged from %s reached another container", forged)
		}
	}
	for _, forged := range toWAN {
		if wanSaw(forged) {
			t.Errorf("a packet forged from %s reached the wan", forged)
		}
	}
	e.must("rm", "-f", "forger", "victim")
	e.must("network", "rm", "bridge")
}

// ruleCount counts the rules in ctnet's tables as nft lists them.
func ruleCount(t *testing.T, e *env) int {
	out, err := e.hostRun("nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	n, inChain := 0, false
	for _, line := range strings.Split(out, "\n") {
		s := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(s, "chain "):
			inChain = true
		case s == "}":
			inChain = false
		case inChain && s != "" && !strings.HasPrefix(s, "type "):
			n++
		}
	}
	return n
}

// With 1,000 published ports a packet traverses as many rules as with one: ports
// live in maps, not rules.
func TestRuleCountIndependentOfPorts(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "one", "-p", "20000:80", "--", "sleep", "600")
	withOne := ruleCount(t, e)
	e.runDetached("--name", "many", "-p", "21000-21998:21000-21998", "--", "sleep", "600")
	withThousand := ruleCount(t, e)
	if withOne != withThousand {
		t.Errorf("rules with 1 published port: %d, with 1,000: %d; want the same", withOne, withThousand)
	}
	out, _ := e.hostRun("nft", "list", "map", "inet", "ctnet", "ports_any")
	if n := strings.Count(out, ":"); n < 1000 {
		t.Errorf("the ports map holds %d elements, want 1,000", n)
	}
	e.must("rm", "-f", "one", "many")
	e.must("network", "rm", "bridge")
}

// After everything is removed ctnet's tables are gone and the rest of the ruleset
// is byte-identical to before.
func TestRulesetRestored(t *testing.T) {
	e := newEnv(t)
	e.host.MustRun(t, "nft", "add table ip other; add chain ip other input { type filter hook input priority 0; policy accept; }; add rule ip other input tcp dport 22 counter accept")
	defer e.host.Try("nft", "delete", "table", "ip", "other")
	before := e.host.MustRun(t, "nft", "list", "ruleset")
	e.runDetached("--name", "p", "-p", "8080:80", "--", "sleep", "600")
	if !strings.Contains(e.host.MustRun(t, "nft", "list", "ruleset"), "table inet ctnet") {
		t.Fatalf("ctnet's table is not there while a container runs")
	}
	e.must("rm", "-f", "p")
	e.must("network", "rm", "bridge")
	if after := e.host.MustRun(t, "nft", "list", "ruleset"); after != before {
		t.Errorf("ruleset differs after removal:\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// A port published twice, or held by a host process, is refused with a message
// naming the holder, and nothing changes.
func TestPortClashes(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "holder", "-p", "8080:80", "--", "sleep", "600")
	listener := e.host.Command(t.Context(), "socat", "TCP-LISTEN:8090,reuseaddr,fork", "SYSTEM:true")
	if err := listener.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { listener.Process.Kill(); listener.Wait() }()
	if !eventually(func() bool { out, _ := e.hostRun("ss", "-ltn"); return strings.Contains(out, ":8090") }) {
		t.Fatal("the host's socat does not listen on 8090")
	}
	before := e.host.Snapshot(t, e.root)
	cases := []struct{ publish, mention string }{
		{"8080:80", "holder"},
		{"0.0.0.0:8080:81", "holder"},
		{"8090:80", "socat"},
		{"203.0.113.1:8090:80", "socat"},
	}
	for _, c := range cases {
		r := e.ctnet("run", "--rm", "-p", c.publish, "--", "true")
		if r.Code == 0 || !strings.Contains(r.Stderr, c.mention) {
			t.Errorf("-p %s: want a refusal naming %s, got %s", c.publish, c.mention, r)
		}
	}
	if diff := before.Diff(e.host.Snapshot(t, e.root)); diff != "" {
		t.Errorf("a refused run changed the host:\n%s", diff)
	}
	e.must("rm", "-f", "holder")
	e.must("network", "rm", "bridge")
}

// doctor names a foreign table whose forward chain drops by policy, and says what
// to do.
func TestDoctorFindsForeignDrop(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "d", "--", "sleep", "600")
	if r := e.ctnet("doctor"); r.Code != 0 {
		t.Errorf("doctor on a healthy host: %s", r)
	}
	e.host.MustRun(t, "nft", "add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }")
	defer e.host.Try("nft", "delete", "table", "ip", "filter")
	r := e.ctnet("doctor")
	if r.Code == 0 || !strings.Contains(r.Stdout, "table ip filter chain FORWARD") || !strings.Contains(r.Stdout, "fix:") {
		t.Errorf("doctor should name table ip filter chain FORWARD and a fix, got %s", r)
	}
	e.must("rm", "-f", "d")
	e.must("network", "rm", "bridge")
}

// A network with masquerade off is routed: the wan sees the container's own address,
// and reaches the container directly when it routes the subnet to the host.
func TestRoutedNetwork(t *testing.T) {
	e := newEnv(t)
	srv := e.wan.Command(t.Context(), peerServer(9998)...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	e.wan.MustRun(t, "ip", "route", "add", "10.93.0.0/24", "via", lab.HostUplinkIP)
	e.must("network", "create", "routed", "--subnet", "10.93.0.0/24", "--opt", "masquerade=false")
	e.runDetached(append([]string{"--name", "r", "--network", "routed", "--"}, peerServer(7000)...)...)
	ip := e.ip("r")
	var got string
	if !eventually(func() bool { got = askPeer(e.containerRun("r"), lab.WANIP, 9998); return got != "" }) {
		t.Fatalf("a container on a routed network cannot reach the wan")
	}
	if got != ip {
		t.Errorf("the wan saw %s, want the container's own address %s (no masquerade)", got, ip)
	}
	if got := askPeer(e.wanRun, ip, 7000); got != lab.WANIP {
		t.Errorf("the wan reaching the container directly: server saw %q, want %s", got, lab.WANIP)
	}
	e.must("rm", "-f", "r")
	e.must("network", "rm", "routed")
}
