package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/ctnet/ctnet/internal/lab"
)

// newUserEnv6 is newUserEnv with a wan, which lab.AddWAN reaches over both families
// (lab.HostUplinkIP6 on the uplink, lab.WANIP6 the wan and the host's IPv6 default
// route).
func newUserEnv6(t *testing.T) (*userEnv, *lab.WAN) {
	t.Helper()
	u := newUserEnv(t)
	return u, u.host.AddWAN(t)
}

// serveIn runs a server in sb until the test ends, stopping it by its PID.
func serveIn(t *testing.T, sb *lab.Sandbox, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := sb.Command(ctx, args...)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %v in %s: %v", args, sb.Name, err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
}

// peerServer6 is peerServer on IPv6 and IPv4 (one dual-stack socket).
func peerServer6(port int) []string {
	return []string{"socat", fmt.Sprintf("TCP6-LISTEN:%d,fork,reuseaddr,ipv6only=0", port), "SYSTEM:echo $SOCAT_PEERADDR"}
}

// A rootless container has fd00::100 on tap0, usable (not tentative) as soon as its
// command runs, and reaches the wan over IPv6 through the host's sockets: a TCP
// server there sees the host's uplink address, ping -6 is answered, and fd00::3
// answers an AAAA query with the record the host's resolver gives, as 10.0.2.3
// does for A records; the container's resolv.conf names fd00::3 after 10.0.2.3.
func TestRootlessIPv6WayOut(t *testing.T) {
	u, wan := newUserEnv6(t)
	serveIn(t, &wan.Sandbox, peerServer6(8080)...)
	u.host.AddLoopbackAddr(t, "198.51.100.10/32")
	resolver := u.host.ListenUDP(t, "198.51.100.10:5353")
	go serveAAAA(resolver, "svc6.test.", "2001:db8:ff::77")

	r := u.ctnet("run", "--rm", "--dns", "198.51.100.10:5353", "--", "sh", "-c",
		"ip -6 -o addr show dev tap0 scope global; ip -6 route show default; "+
			"grep ^nameserver /etc/resolv.conf; "+
			"echo TCP $(socat -T2 - TCP6:["+lab.WANIP6+"]:8080,connect-timeout=5); "+
			"ping -6 -c1 -W2 "+lab.WANIP6+" >/dev/null && echo PING6-OK; "+
			"python3 -c 'import socket,struct\n"+
			"q=struct.pack(\"!HHHHHH\",7,0x100,1,0,0,0)+b\"\\x04svc6\\x04test\\x00\"+struct.pack(\"!HH\",28,1)\n"+
			"s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);s.settimeout(3);s.sendto(q,(\"fd00::3\",53))\n"+
			"r=s.recv(512);print(\"AAAA\",socket.inet_ntop(socket.AF_INET6,r[-16:]))'")
	if r.Code != 0 {
		t.Fatalf("rootless run: %s", r)
	}
	addr := firstLineWith(r.Stdout, "inet6 fd00::100/64")
	if addr == "" || strings.Contains(addr, "tentative") {
		t.Errorf("tap0 should have fd00::100/64, not tentative, when the command starts:\n%s", r.Stdout)
	}
	if l := firstLineWith(r.Stdout, "TCP "); peerAddr(strings.TrimPrefix(l, "TCP ")) != lab.HostUplinkIP6 {
		t.Errorf("the wan's server saw the container as %q, want the host's uplink %s:\n%s", l, lab.HostUplinkIP6, r)
	}
	for _, want := range []string{
		"default via fd00::2 dev tap0",
		"nameserver 10.0.2.3\nnameserver fd00::3\n",
		"PING6-OK",
		"AAAA 2001:db8:ff::77",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("rootless container output lacks %q:\n%s", want, r)
		}
	}
}

// peerAddr is the address socat's SOCAT_PEERADDR names, in netip's form: socat
// writes IPv6 addresses in brackets and in full.
func peerAddr(s string) string {
	a, err := netip.ParseAddr(strings.Trim(strings.TrimSpace(s), "[]"))
	if err != nil {
		return strings.TrimSpace(s)
	}
	return a.String()
}

func firstLineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// serveAAAA answers queries for name with an AAAA record holding addr, and others
// with an empty reply, until pc is closed.
func serveAAAA(pc net.PacketConn, name, addr string) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var q dns.Msg
		if q.Unpack(buf[:n]) != nil || len(q.Question) == 0 {
			continue
		}
		resp := new(dns.Msg)
		resp.SetReply(&q)
		if q.Question[0].Name == name && q.Question[0].Qtype == dns.TypeAAAA {
			resp.Answer = append(resp.Answer, &dns.AAAA{
				Hdr:  dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60},
				AAAA: net.ParseIP(addr)})
		}
		out, _ := resp.Pack()
		pc.WriteTo(out, from)
	}
}

// A port published on every address answers over IPv6 too: from the host on ::1
// and from the wan on the host's uplink address, over TCP and UDP, and the server
// in the container sees each client's true address; a TCP server listening on
// IPv4 alone sees IPv6 clients come from the gateway 10.0.2.2. A port published on
// [::1] listens there only: the wan is refused on the uplink address.
func TestRootlessIPv6PublishedPorts(t *testing.T) {
	u, wan := newUserEnv6(t)
	u.must("run", "-d", "--name", "srv", "-p", "8086:8000", "-p", "[::1]:8087:8000", "-p", "8088:8001/udp", "-p", "8090:8002", "--",
		"sh", "-c", "socat TCP6-LISTEN:8000,fork,reuseaddr,ipv6only=0 'SYSTEM:echo $SOCAT_PEERADDR' & "+
			"socat TCP4-LISTEN:8002,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & "+
			"python3 -c '"+udpPeerScript+"' & wait")
	cases := []struct {
		name      string
		run       func(args ...string) (string, error)
		addr      string
		port      int
		udp       bool
		wantPeer  string // "" = must not answer
		wantFirst bool   // the server needs a moment to start: wait for this one
	}{
		{"tcp from the host on ::1", u.host.Try, "[::1]", 8086, false, "::1", true},
		{"tcp from the wan", wan.Try, "[" + lab.HostUplinkIP6 + "]", 8086, false, lab.WANIP6, false},
		{"tcp from the host over IPv4", u.host.Try, "127.0.0.1", 8086, false, "::ffff:127.0.0.1", false},
		{"udp from the wan", wan.Try, "[" + lab.HostUplinkIP6 + "]", 8088, true, lab.WANIP6, true},
		{"udp from the host on ::1", u.host.Try, "[::1]", 8088, true, "::1", false},
		{"udp from the host over IPv4", u.host.Try, "127.0.0.1", 8088, true, "::ffff:127.0.0.1", false},
		{"tcp on [::1] from the host", u.host.Try, "[::1]", 8087, false, "::1", false},
		{"tcp on [::1] from the wan", wan.Try, "[" + lab.HostUplinkIP6 + "]", 8087, false, "", false},
		// A server on IPv4 alone serves IPv6 clients from the IPv4 gateway.
		{"tcp to an IPv4-only server from the wan", wan.Try, "[" + lab.HostUplinkIP6 + "]", 8090, false, "10.0.2.2", false},
		{"tcp to an IPv4-only server from the host over IPv4", u.host.Try, "127.0.0.1", 8090, false, "127.0.0.1", false},
	}
	for _, c := range cases {
		ask := func() string {
			if c.udp {
				// Not socat, which gives up half a second after its input
				// ends.
				out, _ := c.run("python3", "-c", udpAskScript, strings.Trim(c.addr, "[]"), fmt.Sprint(c.port))
				return strings.TrimSpace(out)
			}
			return askPeer(c.run, c.addr, c.port)
		}
		var got string
		if c.wantFirst {
			eventually(func() bool { got = ask(); return got != "" })
		} else {
			got = ask()
		}
		if got = peerAddr(got); got != c.wantPeer {
			t.Errorf("%s: the server saw the client as %q, want %q", c.name, got, c.wantPeer)
		}
	}
	listening := u.host.MustRun(t, "ss", "-Hln")
	for _, want := range []string{"0.0.0.0:8086", "[::]:8086", "[::1]:8087", "[::]:8088"} {
		if !strings.Contains(listening, want) {
			t.Errorf("the host does not listen on %s:\n%s", want, listening)
		}
	}
	if strings.Contains(listening, "[::]:8087") || strings.Contains(listening, "0.0.0.0:8087") {
		t.Errorf("a port published on [::1] listens on more than ::1:\n%s", listening)
	}
	if out := u.must("ps"); !strings.Contains(out, "[::1]:8087->8000/tcp") || !strings.Contains(out, "10.0.2.100,fd00::100") {
		t.Errorf("ps does not show the port published on [::1] and both of the container's addresses:\n%s", out)
	}
	var c struct {
		UserNet struct{ IP, Gateway, IP6, Gateway6 string } `json:"usernet"`
	}
	(&env{t: t}).decodeInspected(u.must("inspect", "--format", "json", "srv"), &c)
	if got := fmt.Sprint(c.UserNet); got != "{10.0.2.100 10.0.2.2 fd00::100 fd00::2}" {
		t.Errorf("inspect's JSON gives the user-mode network's addresses and gateways as %s", got)
	}
	if got := u.must("inspect", "--format", "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.GlobalIPv6Address}} {{.NetworkSettings.IPv6Gateway}}", "srv"); strings.TrimSpace(got) != "10.0.2.100 fd00::100 fd00::2" {
		t.Errorf("inspect's Docker fields give the user-mode addresses as %q", got)
	}
	if out := u.must("inspect", "srv"); !strings.Contains(out, "fd00::100") || !strings.Contains(out, "10.0.2.100") {
		t.Errorf("inspect does not show the user-mode network's addresses:\n%s", out)
	}
	u.must("rm", "-f", "srv")
	listening = u.host.MustRun(t, "ss", "-Hln")
	for _, port := range []string{":8086", ":8087", ":8088", ":8090"} {
		if strings.Contains(listening, port) {
			t.Errorf("the host still listens on %s after rm:\n%s", port, listening)
		}
	}
}

// udpPeerScript answers each datagram to UDP 8001, over IPv6 or IPv4, with the
// address it came from, from a socket bound to no address.
const udpPeerScript = `import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 8001))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(peer[0].encode(), peer)
`

// udpAskScript sends a datagram from a socket connected to [argv[1]]:argv[2],
// which takes answers from that address alone, and prints the first answer.
const udpAskScript = `import socket, sys
family, _, _, _, addr = socket.getaddrinfo(sys.argv[1], int(sys.argv[2]), 0, socket.SOCK_DGRAM)[0]
s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(5); s.connect(addr)
s.send(b"hi\n"); print(s.recv(200).decode())
`

// forgedSYNScript sends, for each argument LABEL=ADDRESS,PORT, one TCP SYN to
// [ADDRESS]:PORT in a frame to the gateway fd00::2 and prints LABEL and what came
// back: the raw packets a root process in the container can forge, with
// destinations its kernel would not send out of tap0.
const forgedSYNScript = `import sys
from scapy.all import conf, Ether, IPv6, TCP, srp1, getmacbyip6
conf.verb = 0
gateway = getmacbyip6("fd00::2")
for arg in sys.argv[1:]:
    label, target = arg.split("=")
    dst, port = target.rsplit(",", 1)
    a = srp1(Ether(dst=gateway)/IPv6(src="fd00::100", dst=dst)/TCP(sport=40000, dport=int(port), flags="S"), iface="tap0", timeout=3)
    if a is None or TCP not in a:
        print(label, "NOANSWER")
    elif a[TCP].flags & 0x12 == 0x12:
        print(label, "SYNACK")
    else:
        print(label, "REFUSED")
`

// As over IPv4, the host's loopback is out of a rootless container's reach over
// IPv6 unless --allow-host-loopback: fd00::2 stands for ::1 only with it, and
// forged SYNs to addresses a host socket would take to its loopback
// (::ffff:127.0.0.1 over IPv4, ::127.0.0.1 through a sit tunnel, ::, ::1) are
// refused or dropped, while the same forged SYN to the host's own IPv6 address is
// answered (the positive control).
func TestRootlessIPv6HostLoopback(t *testing.T) {
	u, _ := newUserEnv6(t)
	serveIn(t, u.host, "socat", "TCP6-LISTEN:9090,bind=[::1],fork,reuseaddr", "SYSTEM:echo host-loopback-v6")
	serveIn(t, u.host, "socat", "TCP4-LISTEN:9091,bind=127.0.0.1,fork,reuseaddr", "SYSTEM:echo host-loopback-v4")
	serveIn(t, u.host, "socat", "TCP6-LISTEN:9092,bind=["+lab.HostUplinkIP6+"],fork,reuseaddr", "SYSTEM:echo host-uplink")
	eventually(func() bool { return askPeer(u.host.Try, "[::1]", 9090) != "" })

	probe := "echo GW $(socat -T2 - TCP6:[fd00::2]:9090,connect-timeout=3 2>&1 | tr -d '\\n'); " +
		"/usr/bin/python3 -c '" + forgedSYNScript + "' MAPPED=::ffff:127.0.0.1,9091 COMPAT=::127.0.0.1,9091 " +
		"UNSPECIFIED=::,9090 LOOPBACK=::1,9090 UPLINK=" + lab.HostUplinkIP6 + ",9092"
	r := u.ctnet("run", "--rm", "--", "sh", "-c", probe)
	if r.Code != 0 {
		t.Fatalf("rootless run: %s", r)
	}
	t.Logf("probes from the container:\n%s", r.Stdout)
	if l := firstLineWith(r.Stdout, "GW "); !strings.Contains(l, "Connection refused") {
		t.Errorf("fd00::2 without --allow-host-loopback: want the connection refused at once, not the host's ::1, got %q", l)
	}
	for _, label := range []string{"MAPPED", "COMPAT", "UNSPECIFIED", "LOOPBACK"} {
		if l := firstLineWith(r.Stdout, label+" "); l == "" || strings.HasSuffix(l, "SYNACK") {
			t.Errorf("a forged SYN toward the host's loopback (%s) should be refused or dropped, got %q:\n%s", label, l, r)
		}
	}
	if l := firstLineWith(r.Stdout, "UPLINK "); l != "UPLINK SYNACK" {
		t.Errorf("positive control: a SYN to the host's %s should be answered, got %q:\n%s", lab.HostUplinkIP6, l, r)
	}

	r = u.ctnet("run", "--rm", "--allow-host-loopback", "--", "socat", "-T2", "-", "TCP6:[fd00::2]:9090,connect-timeout=3")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "host-loopback-v6" {
		t.Errorf("with --allow-host-loopback fd00::2 should reach the host's ::1: %s", r)
	}
}

// On a host without IPv6, IPv6 from a rootless container fails at once instead of
// hanging, TCP reset and UDP port-unreachable, whether the host has no IPv6 route or
// IPv6 turned off on its interfaces; IPv4 still works, and a port published on
// every address still answers on IPv4.
func TestRootlessIPv6HostWithout(t *testing.T) {
	u := newUserEnv(t)
	u.host.AddLoopbackAddr(t, "198.51.100.10/32")
	web := u.host.ListenTCP(t, "198.51.100.10:8080")
	go serveHTTP(web, "ipv4 still works")
	probe := "timeout 10 socat -T2 - TCP6:[" + lab.WANIP6 + "]:80,connect-timeout=8 </dev/null; echo TCP6 $?; " +
		"echo hi | timeout 10 socat -T5 - UDP6:[" + lab.WANIP6 + "]:53 ; echo UDP6 $?; " +
		"curl -s -m5 http://198.51.100.10:8080/"
	for _, ipv6 := range []string{"without a route", "turned off"} {
		if ipv6 == "turned off" {
			u.host.Sysctl(t, "net.ipv6.conf.all.disable_ipv6", "1")
			u.host.Sysctl(t, "net.ipv6.conf.lo.disable_ipv6", "1")
		}
		r := u.ctnet("run", "--rm", "--", "sh", "-c", probe)
		if r.Code != 0 {
			t.Fatalf("IPv6 %s: rootless run: %s", ipv6, r)
		}
		for _, want := range []string{"TCP6 1\n", "UDP6 1\n", "ipv4 still works"} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("IPv6 %s: want %q (1: failed, 124: hung until timeout) in:\n%s", ipv6, want, r)
			}
		}
		if strings.Count(r.Stderr, "Connection refused") != 2 {
			t.Errorf("IPv6 %s: want IPv6 TCP and UDP refused at once:\n%s", ipv6, r)
		}
	}
	u.must(append([]string{"run", "-d", "--name", "srv", "-p", "8089:8000", "--"}, peerServer(8000)...)...)
	if !eventually(func() bool { return askPeer(u.host.Try, "127.0.0.1", 8089) == "127.0.0.1" }) {
		t.Errorf("with IPv6 off, a port published on every address does not answer on 127.0.0.1")
	}
	u.must("rm", "-f", "srv")
}
