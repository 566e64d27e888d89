package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
)

// ip6 is a container's IPv6 address on its first network, from ctnet's records.
func (e *env) ip6(name string) string {
	e.t.Helper()
	var c struct {
		Networks []struct {
			IP6      string `json:"ip6"`
			Gateway6 string `json:"gateway6"`
		} `json:"networks"`
	}
	e.decodeInspected(e.must("inspect", "--format", "json", name), &c)
	if len(c.Networks) == 0 || c.Networks[0].IP6 == "" {
		e.t.Fatalf("container %s has no IPv6 address", name)
	}
	return c.Networks[0].IP6
}

// askPeer6 is askPeer to an address of either family, whose answer (socat's
// SOCAT_PEERADDR of an IPv6 listener: bracketed, every zero written, IPv4 mapped) it
// returns in canonical form: 2001:db8::1, or 203.0.113.2 for a mapped address.
func askPeer6(run func(args ...string) (string, error), addr string, port int) string {
	out, err := run("socat", "-T2", "-", fmt.Sprintf("TCP:%s,connect-timeout=2", netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port))))
	if err != nil {
		return ""
	}
	a, err := netip.ParseAddr(strings.Trim(strings.TrimSpace(out), "[]"))
	if err != nil {
		return strings.TrimSpace(out)
	}
	return a.Unmap().String()
}

func ping6OK(run func(args ...string) (string, error), addr string) bool {
	_, err := run("ping", "-6", "-c1", "-W1", addr)
	return err == nil
}

func sysctlIn(run func(args ...string) (string, error), key string) string {
	out, _ := run("cat", "/proc/sys/"+strings.ReplaceAll(key, ".", "/"))
	return strings.TrimSpace(out)
}

// startIn starts a long-running command in a sandbox, ended at cleanup.
func startIn(t *testing.T, sb *lab.Sandbox, args ...string) {
	t.Helper()
	cmd := sb.Command(t.Context(), args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// A dual-stack network: containers get an address of each family from ctnet, usable
// the moment run returns (not tentative), take nothing from router advertisements,
// reach each other and the wan over both families, masqueraded behind the host's
// addresses (NAT66 for IPv6); the embedded DNS server answers AAAA for them. The
// host's uplink, which took router advertisements, takes them still now that IPv6
// forwarding is on, and forwarding is off again after the last network.
func TestIPv6DualStack(t *testing.T) {
	e := newEnv(t)
	startIn(t, &e.wan.Sandbox, peerServer6(9998)...)
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.uplink0.accept_ra"); got != "1" {
		t.Fatalf("uplink0 has accept_ra=%s before the test, want the kernel's default 1", got)
	}
	e.must("network", "create", "dual", "--ipv6")
	var ns []struct{ Subnet, Subnet6, Gateway6 string }
	e.decode(e.must("network", "inspect", "--format", "json", "dual"), &ns)
	n := ns[0]
	subnet6, err := netip.ParsePrefix(n.Subnet6)
	if err != nil || subnet6.Bits() != 64 || !netip.MustParsePrefix("fd00::/8").Contains(subnet6.Addr()) || n.Subnet == "" {
		t.Fatalf("network dual has subnets %q and %q, want an IPv4 one and a unique-local /64", n.Subnet, n.Subnet6)
	}
	e.runDetached("--name", "a", "--network", "dual", "--", "sleep", "600")
	// Read before anything else can have waited for duplicate address detection.
	if out, err := e.inContainer("a", "ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"); err != nil || strings.Contains(out, "tentative") || !strings.Contains(out, e.ip6("a")+"/64") {
		t.Errorf("a's IPv6 address right after run: want %s/64, not tentative; got %v:\n%s", e.ip6("a"), err, out)
	}
	e.runDetached(append([]string{"--name", "b", "--network", "dual", "--"}, peerServer6(7000)...)...)
	a6, b6 := e.ip6("a"), e.ip6("b")
	if !subnet6.Contains(netip.MustParseAddr(a6)) || a6 == b6 {
		t.Fatalf("addresses %s and %s, want two of %s", a6, b6, subnet6)
	}
	for _, key := range []string{"accept_ra", "autoconf"} {
		if got := sysctlIn(e.containerRun("a"), "net.ipv6.conf.eth0."+key); got != "0" {
			t.Errorf("a's eth0 has %s=%s, want 0: containers do not configure themselves from the link", key, got)
		}
	}
	if out, _ := e.inContainer("a", "ip", "-6", "route", "show", "default"); !strings.Contains(out, "via "+n.Gateway6) {
		t.Errorf("a's IPv6 default route: want via %s, got %q", n.Gateway6, out)
	}
	if !ping6OK(e.containerRun("a"), b6) || !pingOK(e.containerRun("a"), e.ip("b")) {
		t.Errorf("a does not reach b over both families")
	}
	if !eventually(func() bool { return askPeer6(e.containerRun("a"), b6, 7000) == a6 }) {
		t.Errorf("b's server does not see a at %s over IPv6", a6)
	}
	if got := askPeer6(e.containerRun("a"), lab.WANIP6, 9998); got != lab.HostUplinkIP6 {
		t.Errorf("the wan saw a at %q over IPv6, want the host's %s (NAT66)", got, lab.HostUplinkIP6)
	}
	if got := askPeer6(e.containerRun("a"), lab.WANIP, 9998); got != lab.HostUplinkIP {
		t.Errorf("the wan saw a at %q over IPv4, want the host's %s", got, lab.HostUplinkIP)
	}
	if got := askPeer6(e.wanRun, b6, 7000); got != "" {
		t.Errorf("the wan reached b's unpublished port on a masqueraded network (b saw %s)", got)
	}
	lookup6 := func(from, name string) string {
		out := e.ctnet("exec", from, "--", "getent", "ahostsv6", name).Stdout
		for _, f := range strings.Fields(out) {
			if a, err := netip.ParseAddr(f); err == nil && a.Is6() && !a.Is4In6() {
				return f
			}
		}
		return ""
	}
	if got := lookup6("a", "b"); got != b6 {
		t.Errorf("a resolving b's AAAA: got %q, want %s", got, b6)
	}
	// A container without IPv6 has no AAAA, though its name resolves.
	e.must("network", "create", "plain", "--subnet", "10.75.0.0/24")
	e.runDetached("--name", "p", "--network", "plain", "--", "sleep", "600")
	if got := lookup6("p", "p"); got != "" {
		t.Errorf("p, without IPv6, resolves to the IPv6 address %s", got)
	}
	if r := e.ctnet("exec", "p", "--", "getent", "ahostsv4", "p"); r.Code != 0 || !strings.Contains(r.Stdout, e.ip("p")) {
		t.Errorf("p does not resolve its own name: %s", r)
	}
	if ps := e.must("ps"); !strings.Contains(ps, a6) || !strings.Contains(ps, e.ip("a")) {
		t.Errorf("ps does not show both of a's addresses (%s, %s):\n%s", e.ip("a"), a6, ps)
	}
	if got, want := strings.TrimSpace(e.must("inspect", "--format", "{{.NetworkSettings.GlobalIPv6Address}}/{{.NetworkSettings.GlobalIPv6PrefixLen}} {{.NetworkSettings.IPv6Gateway}}", "a")), a6+"/64 "+n.Gateway6; got != want {
		t.Errorf("inspect's Docker IPv6 fields: %q, want %q", got, want)
	}
	if out := e.must("inspect", "a"); !strings.Contains(out, a6+"/64") {
		t.Errorf("inspect does not show a's IPv6 address:\n%s", out)
	}
	e.must("rm", "-f", "p")
	e.must("network", "rm", "plain")
	// The host's accept_ra: 2 now that forwarding is on, and effective: a router
	// advertisement from the wan still gives the host a default route.
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.all.forwarding"); got != "1" {
		t.Errorf("IPv6 forwarding is %s with a network that has IPv6, want 1", got)
	}
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.uplink0.accept_ra"); got != "2" {
		t.Errorf("uplink0 has accept_ra=%s with IPv6 forwarding on, want 2", got)
	}
	advertise := func() bool {
		if err := scapy(e.wanRun, wanRouterAdvertScript); err != nil {
			t.Fatal(err)
		}
		learnt := eventually(func() bool {
			out, _ := e.hostRun("ip", "-6", "route", "show", "default", "proto", "ra")
			return strings.Contains(out, "dev uplink0")
		})
		e.host.MustRun(t, "ip", "-6", "route", "flush", "proto", "ra")
		return learnt
	}
	if !advertise() {
		t.Errorf("with IPv6 forwarding on, the host ignores its router's advertisements")
	}
	// The control: what accept_ra=1 would do with forwarding on.
	e.host.Sysctl(t, "net.ipv6.conf.uplink0.accept_ra", "1")
	if advertise() {
		t.Errorf("accept_ra=1 with forwarding on took an advertisement: the check above proves nothing")
	}
	e.host.Sysctl(t, "net.ipv6.conf.uplink0.accept_ra", "1")
	e.must("rm", "-f", "a", "b")
	e.must("network", "rm", "dual")
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.all.forwarding"); got != "0" {
		t.Errorf("IPv6 forwarding is %s after the last network, want 0 as before", got)
	}
}

// wanRouterAdvertScript has the wan advertise itself as a default router on wan0.
const wanRouterAdvertScript = `
from scapy.all import Ether, IPv6, ICMPv6ND_RA, ICMPv6NDOptSrcLLAddr, conf, get_if_hwaddr, sendp
from scapy.utils6 import in6_mactoifaceid
conf.verb = 0
mac = get_if_hwaddr("wan0")
ra = Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::" + in6_mactoifaceid(mac), dst="ff02::1", hlim=255) / \
    ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptSrcLLAddr(lladdr=mac)
sendp(ra, iface="wan0", count=2)
`

// A routed dual-stack network (masquerade=false) with a gateway of each family
// named: the wan sees the container's own addresses and reaches it directly, over
// both families; run and attach take --ip6.
func TestIPv6Routed(t *testing.T) {
	e := newEnv(t)
	startIn(t, &e.wan.Sandbox, peerServer6(9998)...)
	e.wan.MustRun(t, "ip", "route", "add", "10.93.0.0/24", "via", lab.HostUplinkIP)
	e.wan.MustRun(t, "ip", "-6", "route", "add", "2001:db8:93::/64", "via", lab.HostUplinkIP6)
	e.must("network", "create", "routed", "--ipv6", "--subnet", "10.93.0.0/24", "--subnet", "2001:db8:93::/64",
		"--gateway", "2001:db8:93::fe", "--gateway", "10.93.0.254", "--opt", "masquerade=false")
	e.runDetached(append([]string{"--name", "r", "--network", "routed", "--ip6", "2001:db8:93::42", "--"}, peerServer6(7000)...)...)
	if got := e.ip6("r"); got != "2001:db8:93::42" {
		t.Fatalf("--ip6 2001:db8:93::42 gave %s", got)
	}
	if out, _ := e.inContainer("r", "ip", "-6", "route", "show", "default"); !strings.Contains(out, "via 2001:db8:93::fe") {
		t.Errorf("r's IPv6 default route: want via the named gateway 2001:db8:93::fe, got %q", out)
	}
	if out, _ := e.inContainer("r", "ip", "-4", "route", "show", "default"); !strings.Contains(out, "via 10.93.0.254") {
		t.Errorf("r's IPv4 default route: want via the named gateway 10.93.0.254, got %q", out)
	}
	pod := lab.NewSandbox(t)
	e.must("attach", "--netns", pod.Path, "--name", "pod", "--network", "routed", "--ip6", "2001:db8:93::43")
	if out, _ := pod.Try("ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"); !strings.Contains(out, "2001:db8:93::43/64") {
		t.Errorf("attach --ip6 2001:db8:93::43: the namespace's eth0 has\n%s", out)
	}
	if !ping6OK(e.wanRun, "2001:db8:93::43") {
		t.Errorf("the wan does not reach the attached namespace at 2001:db8:93::43")
	}
	e.must("rm", "pod")
	if !eventually(func() bool { return askPeer6(e.containerRun("r"), lab.WANIP6, 9998) != "" }) {
		t.Fatalf("a container on a routed network cannot reach the wan over IPv6")
	}
	if got := askPeer6(e.containerRun("r"), lab.WANIP6, 9998); got != "2001:db8:93::42" {
		t.Errorf("the wan saw %s, want the container's own 2001:db8:93::42 (no NAT66)", got)
	}
	if got := askPeer6(e.wanRun, "2001:db8:93::42", 7000); got != lab.WANIP6 {
		t.Errorf("the wan reaching the container directly: server saw %q, want %s", got, lab.WANIP6)
	}
	if got := askPeer6(e.wanRun, e.ip("r"), 7000); got != lab.WANIP {
		t.Errorf("the wan reaching the container over IPv4: server saw %q, want %s", got, lab.WANIP)
	}
	if r := e.ctnet("run", "--network", "routed", "--ip6", "2001:db8:93::42", "--", "true"); r.Code == 0 || !strings.Contains(r.Stderr, "already used") {
		t.Errorf("a taken --ip6 was not refused: %s", r)
	}
	e.must("rm", "-f", "r")
	e.must("network", "rm", "routed")
}

// An IPv6-only network: its containers have no IPv4 address and reach each other
// and the wan over IPv6. IPv6 forwarding, on before ctnet, is left on after the last
// network, and the host's accept_ra as it was.
func TestIPv6OnlyNetwork(t *testing.T) {
	e := newEnv(t)
	startIn(t, &e.wan.Sandbox, peerServer6(9998)...)
	e.host.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	e.must("network", "create", "six", "--ipv6", "--ipv4=false")
	e.runDetached("--name", "a", "--network", "six", "--", "sleep", "600")
	e.runDetached(append([]string{"--name", "b", "--network", "six", "--"}, peerServer6(7000)...)...)
	if out, _ := e.inContainer("a", "ip", "-4", "addr", "show", "dev", "eth0"); strings.Contains(out, "inet ") {
		t.Errorf("a container of an IPv6-only network has IPv4: %s", out)
	}
	var c struct {
		Networks []struct{ IP, IP6 string } `json:"networks"`
	}
	e.decodeInspected(e.must("inspect", "--format", "json", "a"), &c)
	if c.Networks[0].IP != "" || c.Networks[0].IP6 == "" {
		t.Errorf("a's record: ip %q, ip6 %q; want none and one", c.Networks[0].IP, c.Networks[0].IP6)
	}
	if !eventually(func() bool { return askPeer6(e.containerRun("a"), e.ip6("b"), 7000) == e.ip6("a") }) {
		t.Errorf("a does not reach b over IPv6")
	}
	if got := askPeer6(e.containerRun("a"), lab.WANIP6, 9998); got != lab.HostUplinkIP6 {
		t.Errorf("the wan saw a at %q, want the host's %s (NAT66)", got, lab.HostUplinkIP6)
	}
	if r := e.ctnet("run", "--network", "six", "--ip", "10.1.2.3", "--", "true"); r.Code == 0 {
		t.Errorf("--ip on an IPv6-only network was accepted: %s", r)
	}
	e.must("rm", "-f", "a", "b")
	e.must("network", "rm", "six")
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.all.forwarding"); got != "1" {
		t.Errorf("IPv6 forwarding, on before ctnet, is %s after the last network", got)
	}
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.uplink0.accept_ra"); got != "1" {
		t.Errorf("uplink0's accept_ra is %s: ctnet changed it though it did not turn forwarding on", got)
	}
	e.host.Sysctl(t, "net.ipv6.conf.all.forwarding", "0")
}

// Ports published on a dual-stack network answer on both families, and the
// container sees the client's real IPv6 address; one published on an IPv6 address
// answers there only. [::1] is refused: IPv6 has no route_localnet.
func TestIPv6PublishedPorts(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "dual", "--ipv6")
	e.runDetached(append([]string{"--name", "web", "--network", "dual", "-p", "8080:7000", "-p", "[" + lab.HostUplinkIP6 + "]:8081:7000", "--"}, peerServer6(7000)...)...)
	if !eventually(func() bool { return askPeer6(e.wanRun, lab.HostUplinkIP6, 8080) == lab.WANIP6 }) {
		t.Errorf("the wan reaching [%s]:8080: want the server to see the wan's own %s, got %q", lab.HostUplinkIP6, lab.WANIP6, askPeer6(e.wanRun, lab.HostUplinkIP6, 8080))
	}
	if got := askPeer6(e.wanRun, lab.HostUplinkIP, 8080); got != lab.WANIP {
		t.Errorf("the wan reaching %s:8080 over IPv4: server saw %q, want %s", lab.HostUplinkIP, got, lab.WANIP)
	}
	// From the host itself, and from the container through the host's address
	// (hairpin: masqueraded, so the reply comes back the same way).
	if got := askPeer6(e.hostRun, lab.HostUplinkIP6, 8080); got != lab.HostUplinkIP6 {
		t.Errorf("the host reaching its own [%s]:8080: server saw %q", lab.HostUplinkIP6, got)
	}
	if got := askPeer6(e.containerRun("web"), lab.HostUplinkIP6, 8080); got == "" {
		t.Errorf("the container does not reach its own port published on [%s]:8080", lab.HostUplinkIP6)
	}
	if got := askPeer6(e.wanRun, lab.HostUplinkIP6, 8081); got != lab.WANIP6 {
		t.Errorf("the wan reaching [%s]:8081: server saw %q, want %s", lab.HostUplinkIP6, got, lab.WANIP6)
	}
	if got := askPeer6(e.wanRun, lab.HostUplinkIP, 8081); got != "" {
		t.Errorf("a port published on [%s] only answered on %s (server saw %s)", lab.HostUplinkIP6, lab.HostUplinkIP, got)
	}
	var ports []struct {
		HostIP   string `json:"host_ip"`
		HostPort int    `json:"host_port"`
	}
	e.decode(e.must("port", "--format", "json", "web"), &ports)
	var got []string
	for _, p := range ports {
		got = append(got, fmt.Sprintf("%s %d", p.HostIP, p.HostPort))
	}
	if want := []string{" 8080", ":: 8080", lab.HostUplinkIP6 + " 8081"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("published ports %q, want %q", got, want)
	}
	if out := e.must("port", "web"); !strings.Contains(out, "[::]:8080") || !strings.Contains(out, "0.0.0.0:8080") || !strings.Contains(out, "["+lab.HostUplinkIP6+"]:8081") {
		t.Errorf("ctnet port does not show both families:\n%s", out)
	}
	if r := e.ctnet("run", "--network", "dual", "-p", "[::1]:8082:80", "--", "true"); r.Code == 0 || !strings.Contains(r.Stderr, "route_localnet") {
		t.Errorf("-p [::1]:8082:80 was not refused with the reason: %s", r)
	}
	e.must("rm", "-f", "web")
	e.must("network", "rm", "dual")
}

// forgeScript sends one kind of IPv6 frame from eth0 (from its own MAC): "udp" SRC
// DST DSTMAC, "na" SRC TARGET LLADDR (an unsolicited, overriding neighbour
// advertisement to all nodes), "redirect" DST DSTMAC (from its link-local address,
// sending DST's traffic for 2001:db8:ff::2 to itself), "rs" SRC (a router
// solicitation to all routers), "dhcp6" SRC (a DHCPv6 solicit to all DHCP agents),
// "mld" (from its link-local address: a multicast listener query, an MLDv1 report
// and done and an MLDv2 report for ff02::1234), "ra" (a router advertisement from
// its link-local address, offering a default route and a prefix).
const forgeScript = `
import sys
from scapy.all import Ether, IPv6, UDP, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, ICMPv6ND_RA, ICMPv6NDOptSrcLLAddr, ICMPv6NDOptPrefixInfo, \
    ICMPv6ND_Redirect, ICMPv6ND_RS, DHCP6_Solicit, ICMPv6MLQuery, ICMPv6MLReport, ICMPv6MLDone, ICMPv6MLReport2, \
    ICMPv6MLDMultAddrRec, IPv6ExtHdrHopByHop, RouterAlert, conf, get_if_hwaddr, sendp
from scapy.utils6 import in6_mactoifaceid
conf.verb = 0
iface = sys.argv[1]
kind = sys.argv[2]
mac = get_if_hwaddr(iface)
me = "fe80::" + in6_mactoifaceid(mac)
allnodes = "33:33:00:00:00:01"
if kind == "udp":
    src, dst, dstmac = sys.argv[3:6]
    p = Ether(src=mac, dst=dstmac) / IPv6(src=src, dst=dst) / UDP(sport=4000, dport=5000) / b"x"
elif kind == "na":
    src, target, lladdr = sys.argv[3:6]
    p = Ether(src=mac, dst=allnodes) / IPv6(src=src, dst="ff02::1", hlim=255) / \
        ICMPv6ND_NA(tgt=target, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=lladdr)
elif kind == "redirect":
    dst, dstmac = sys.argv[3:5]
    p = Ether(src=mac, dst=dstmac) / IPv6(src=me, dst=dst, hlim=255) / \
        ICMPv6ND_Redirect(tgt=me, dst="2001:db8:ff::2") / ICMPv6NDOptDstLLAddr(lladdr=mac)
elif kind == "rs":
    p = Ether(src=mac, dst="33:33:00:00:00:02") / IPv6(src=sys.argv[3], dst="ff02::2", hlim=255) / \
        ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=mac)
elif kind == "dhcp6":
    p = Ether(src=mac, dst="33:33:00:01:00:02") / IPv6(src=sys.argv[3], dst="ff02::1:2") / \
        UDP(sport=546, dport=547) / DHCP6_Solicit()
elif kind == "mld":
    hbh = IPv6ExtHdrHopByHop(options=[RouterAlert()])
    p = [Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=me, dst="ff02::1", hlim=1) / hbh / ICMPv6MLQuery(),
         Ether(src=mac, dst="33:33:00:00:12:34") / IPv6(src=me, dst="ff02::1234", hlim=1) / hbh / ICMPv6MLReport(mladdr="ff02::1234"),
         Ether(src=mac, dst="33:33:00:00:00:02") / IPv6(src=me, dst="ff02::2", hlim=1) / hbh / ICMPv6MLDone(mladdr="ff02::1234"),
         Ether(src=mac, dst="33:33:00:00:00:16") / IPv6(src=me, dst="ff02::16", hlim=1) / hbh / \
         ICMPv6MLReport2(records=[ICMPv6MLDMultAddrRec(rtype=4, dst="ff02::1234")])]
else:
    p = Ether(src=mac, dst=allnodes) / IPv6(src="fe80::" + in6_mactoifaceid(mac), dst="ff02::1", hlim=255) / \
        ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptSrcLLAddr(lladdr=mac) / \
        ICMPv6NDOptPrefixInfo(prefix="2001:db8:66::", prefixlen=64, L=1, A=1)
sendp(p, iface=iface, count=3)
`

// On a dual-stack network a container sends IPv6 only from its own addresses, its
// neighbour advertisements claim only its own addresses with its own link-layer
// address, and its router advertisements and redirects reach nobody, though sent
// from its own link-local address; router solicitations and DHCPv6 from any
// link-local address pass, where any other datagram from that address does not.
// Each forged frame is counted arriving at the bridge before ctnet's chains, and
// the same kind of frame done right (its own source, its own target) reaches the
// victim, so silence is ctnet's doing; a forged advertisement sent into the bridge
// by the host does rewrite the victim's neighbour entry, so the check of that entry
// can fail.
func TestIPv6AntiSpoofing(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "dual", "--ipv6")
	e.runDetached("--name", "mallory", "--network", "dual", "--", "sleep", "600")
	e.runDetached("--name", "victim", "--network", "dual", "--", "sleep", "600")
	var ns []struct{ Bridge, Gateway6 string }
	e.decode(e.must("network", "inspect", "--format", "json", "dual"), &ns)
	bridge, gateway6 := ns[0].Bridge, ns[0].Gateway6
	mallory, victim := e.inspect("mallory").Networks[0], e.ip6("victim")
	mallory6 := e.ip6("mallory")
	malloryMAC, victimMAC := macOf(t, e.containerRun("mallory"), "eth0"), macOf(t, e.containerRun("victim"), "eth0")
	bridgeMAC := macOf(t, e.hostRun, bridge)
	const otherLL = "fe80::dead:beef"
	forge := func(args ...string) {
		t.Helper()
		if err := scapy(e.containerRun("mallory"), forgeScript, append([]string{"eth0"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	// Neighbour entries to rewrite: the victim's for its gateway, the host's for the
	// victim.
	if !ping6OK(e.containerRun("victim"), gateway6) || !ping6OK(e.hostRun, victim) {
		t.Fatalf("the victim and the host do not reach each other over IPv6")
	}
	entry := func(run func(...string) (string, error), addr, dev string) string {
		out, _ := run("ip", "-6", "neigh", "show", addr, "dev", dev)
		return strings.TrimSpace(out)
	}
	sent := newCounters(t, e.hostRun, "bridge", "type filter hook prerouting priority -300;", map[string]string{
		"spoofed":         "iifname " + mallory.HostVeth + " ip6 saddr " + lab.WANIP6 + " udp dport 5000",
		"advertisements":  "iifname " + mallory.HostVeth + " icmpv6 type nd-router-advert",
		"redirects":       "iifname " + mallory.HostVeth + " icmpv6 type nd-redirect",
		"neighbour_claim": "iifname " + mallory.HostVeth + " icmpv6 type nd-neighbor-advert",
		"other_ll":        "iifname " + mallory.HostVeth + " ip6 saddr " + otherLL + " udp dport 5000",
	})
	got := newCounters(t, e.namespaceOf("victim"), "inet", "type filter hook prerouting priority -400;", map[string]string{
		"spoofed":         "ip6 saddr " + lab.WANIP6 + " udp dport 5000",
		"own":             "ip6 saddr " + mallory6 + " udp dport 5000",
		"advertisements":  "icmpv6 type nd-router-advert",
		"redirects":       "icmpv6 type nd-redirect",
		"neighbour_claim": "icmpv6 type nd-neighbor-advert ip6 saddr " + mallory6,
		"solicitations":   "ip6 saddr " + otherLL + " icmpv6 type nd-router-solicit",
		"dhcp6":           "ip6 saddr " + otherLL + " udp dport 547",
		"other_ll":        "ip6 saddr " + otherLL + " udp dport 5000",
	})

	// The controls: mallory's own address and its own advertisement pass, and so do
	// a router solicitation and a DHCPv6 solicit from a link-local address not its
	// own (a stack that made its own), which the bridge floods to the victim too.
	forge("udp", mallory6, victim, victimMAC)
	forge("na", mallory6, mallory6, malloryMAC)
	forge("rs", otherLL)
	forge("dhcp6", otherLL)
	if got.packets("own") == 0 || got.packets("neighbour_claim") == 0 {
		t.Fatalf("mallory's own datagram (%d) or advertisement (%d) did not reach the victim: the test proves nothing",
			got.packets("own"), got.packets("neighbour_claim"))
	}
	if got.packets("solicitations") == 0 || got.packets("dhcp6") == 0 {
		t.Errorf("a router solicitation (%d) or DHCPv6 solicit (%d) from %s did not pass the bridge",
			got.packets("solicitations"), got.packets("dhcp6"), otherLL)
	}
	// A forged advertisement rewrites the victim's entry when ctnet is not in the way.
	if err := scapy(e.hostRun, forgeScript, bridge, "na", gateway6, gateway6, malloryMAC); err != nil {
		t.Fatal(err)
	}
	if !eventually(func() bool { return strings.Contains(entry(e.containerRun("victim"), gateway6, "eth0"), malloryMAC) }) {
		t.Fatalf("a forged advertisement from the bridge does not rewrite the victim's entry: the test proves nothing (%s)", entry(e.containerRun("victim"), gateway6, "eth0"))
	}
	e.inContainer("victim", "ip", "-6", "neigh", "replace", gateway6, "lladdr", bridgeMAC, "dev", "eth0", "nud", "stale")

	claims := got.packets("neighbour_claim")
	forge("udp", lab.WANIP6, victim, victimMAC)
	forge("udp", otherLL, victim, victimMAC)
	forge("ra")
	forge("redirect", victim, victimMAC)
	forge("na", mallory6, gateway6, malloryMAC)                // the gateway's address
	forge("na", mallory6, victim, malloryMAC)                  // the victim's
	forge("na", mallory6, mallory6, "02:42:de:ad:be:ef")       // its own, with another MAC
	forge("na", mallory6, linkLocal(t, bridgeMAC), malloryMAC) // the gateway's link-local address
	if sent.packets("spoofed") == 0 || sent.packets("other_ll") == 0 || sent.packets("advertisements") == 0 || sent.packets("redirects") == 0 || sent.packets("neighbour_claim") < 5 {
		t.Fatalf("mallory's forged frames never reached its bridge port: the test proves nothing")
	}
	time.Sleep(500 * time.Millisecond) // for the victim's and host's stacks to act on what arrived
	if n := got.packets("spoofed"); n > 0 {
		t.Errorf("the victim received %d datagrams with a forged source", n)
	}
	if n := got.packets("other_ll"); n > 0 {
		t.Errorf("the victim received %d datagrams from a link-local address not mallory's", n)
	}
	if n := got.packets("advertisements"); n > 0 {
		t.Errorf("the victim received %d of mallory's router advertisements", n)
	}
	if n := got.packets("redirects"); n > 0 {
		t.Errorf("the victim received %d of mallory's redirects", n)
	}
	if n := got.packets("neighbour_claim") - claims; n > 0 {
		t.Errorf("the victim received %d of mallory's forged neighbour advertisements", n)
	}
	if e := entry(e.containerRun("victim"), gateway6, "eth0"); !strings.Contains(e, bridgeMAC) {
		t.Errorf("the victim's entry for its gateway %s was rewritten: %s (mallory is %s)", gateway6, e, malloryMAC)
	}
	if e := entry(e.hostRun, victim, bridge); strings.Contains(e, malloryMAC) {
		t.Errorf("the host's entry for the victim %s points at mallory: %s", victim, e)
	}
	if out, _ := e.inContainer("victim", "ip", "-6", "addr", "show", "dev", "eth0"); strings.Contains(out, "2001:db8:66:") {
		t.Errorf("the victim took an address from mallory's advertisement:\n%s", out)
	}
	if !ping6OK(e.containerRun("victim"), gateway6) || !ping6OK(e.containerRun("victim"), mallory6) {
		t.Errorf("IPv6 from the victim does not flow after the attack")
	}
	e.must("rm", "-f", "mallory", "victim")
	e.must("network", "rm", "dual")
}

// A container's multicast listener discovery reaches neither its neighbours nor the
// host: not the reports a new container's kernel sends as its interface comes up,
// which the bridge flooded to every port, nor queries, reports and dones forged from
// a container's own link-local address (the host's own reports, from the bridge,
// still reach them). Each is counted arriving at the bridge before ctnet's chains,
// so silence is ctnet's doing; multicast itself still reaches the neighbours,
// which never reported the group.
func TestIPv6MulticastListenerReports(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "dual", "--ipv6")
	e.runDetached("--name", "a", "--network", "dual", "--", "sleep", "600")
	e.runDetached("--name", "b", "--network", "dual", "--", "sleep", "600")
	bridge, aVeth := e.bridgeOf("dual"), e.inspect("a").Networks[0].HostVeth
	kinds := map[string]string{
		"queries":    "icmpv6 type mld-listener-query",
		"reports":    "icmpv6 type mld-listener-report",
		"dones":      "icmpv6 type mld-listener-done",
		"reports2":   "icmpv6 type mld2-listener-report",
		"multicast":  "ip6 daddr ff02::1234 udp dport 5000",
		"any_report": "icmpv6 type mld2-listener-report",
	}
	// The host's own reports, from the bridge, go to every container as they should.
	fromContainers := "ether saddr != " + macOf(t, e.hostRun, bridge) + " "
	sentMatches, gotMatches := map[string]string{}, map[string]string{}
	for k, m := range kinds {
		sentMatches[k], gotMatches[k] = "iifname "+aVeth+" "+m, fromContainers+m
	}
	sentMatches["any_report"] = "iifname != " + aVeth + " " + kinds["any_report"]
	sent := newCounters(t, e.hostRun, "bridge", "type filter hook prerouting priority -300;", sentMatches)
	got := newCounters(t, e.namespaceOf("b"), "inet", "type filter hook prerouting priority -400;", gotMatches)
	host := newCounters(t, e.hostRun, "inet", "type filter hook prerouting priority -400;", map[string]string{
		"mld": "iifname " + bridge + " icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report }",
	})

	// The control: a's datagram to a group b never reported reaches b.
	if err := scapy(e.containerRun("a"), forgeScript, "eth0", "udp", e.ip6("a"), "ff02::1234", "33:33:00:00:12:34"); err != nil {
		t.Fatal(err)
	}
	if got.packets("multicast") == 0 {
		t.Fatalf("a's datagram to ff02::1234 did not reach b: multicast does not flow")
	}
	e.runDetached("--name", "c", "--network", "dual", "--", "sleep", "600")
	if err := scapy(e.containerRun("a"), forgeScript, "eth0", "mld"); err != nil {
		t.Fatal(err)
	}
	if !eventually(func() bool { return sent.packets("any_report") > 0 }) {
		t.Fatalf("c's kernel sent no MLDv2 report as its interface came up: the test proves nothing")
	}
	for _, k := range []string{"queries", "reports", "dones", "reports2"} {
		if sent.packets(k) == 0 {
			t.Fatalf("a's %s never reached its bridge port: the test proves nothing", k)
		}
	}
	time.Sleep(500 * time.Millisecond) // for what the bridge flooded to arrive
	for _, k := range []string{"queries", "reports", "dones", "reports2", "any_report"} {
		if n := got.packets(k); n > 0 {
			t.Errorf("b received %d multicast listener %s (%s)", n, k, kinds[k])
		}
	}
	if n := host.packets("mld"); n > 0 {
		t.Errorf("the host received %d multicast listener messages from the containers", n)
	}
	if !ping6OK(e.containerRun("a"), e.ip6("c")) || !ping6OK(e.containerRun("c"), e.ip6("b")) {
		t.Errorf("IPv6 between the containers does not flow without their listener reports")
	}
	e.must("rm", "-f", "a", "b", "c")
	e.must("network", "rm", "dual")
}

// A dual-stack network survives a reboot: the first change restores its bridge with
// both gateways, IPv6 forwarding (after accept_ra=2 on the fresh uplink) and its
// IPv6 firewall entries, so a new container reaches the wan and is reached through a
// published port over IPv6; doctor reports IPv6 forwarding, and gc puts it and a
// deleted bridge back.
func TestIPv6Reboot(t *testing.T) {
	e := newEnv(t)
	startIn(t, &e.wan.Sandbox, peerServer6(9998)...)
	e.must("network", "create", "dual", "--ipv6", "--subnet", "10.74.0.0/24", "--subnet", "fd00:74::/64")
	e.runDetached("--name", "a", "--network", "dual", "--", "sleep", "600")
	e.reboot("a")
	rebooted := e.host.Snapshot(t, e.root)
	rebooted["namespaces under root"], rebooted["mounts under root"] = e.before["namespaces under root"], e.before["mounts under root"]
	e.before = rebooted
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.all.forwarding"); got != "0" {
		t.Fatalf("the fresh host has IPv6 forwarding %s", got)
	}
	e.must("rm", "a") // the first change restores
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.all.forwarding"); got != "1" {
		t.Errorf("IPv6 forwarding is %s after the restore, want 1", got)
	}
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.uplink0.accept_ra"); got != "2" {
		t.Errorf("the fresh uplink has accept_ra=%s after the restore, want 2", got)
	}
	bridge := e.bridgeOf("dual")
	if out, _ := e.hostRun("ip", "-6", "addr", "show", "dev", bridge, "scope", "global"); !strings.Contains(out, "fd00:74::1/64") {
		t.Errorf("the restored bridge lacks its IPv6 gateway:\n%s", out)
	}
	e.runDetached(append([]string{"--name", "b", "--network", "dual", "-p", "8080:7000", "--"}, peerServer6(7000)...)...)
	if got := askPeer6(e.containerRun("b"), lab.WANIP6, 9998); got != lab.HostUplinkIP6 {
		t.Errorf("after the reboot the wan saw b at %q over IPv6, want %s", got, lab.HostUplinkIP6)
	}
	if !eventually(func() bool { return askPeer6(e.wanRun, lab.HostUplinkIP6, 8080) == lab.WANIP6 }) {
		t.Errorf("the published port does not answer over IPv6 after the reboot")
	}
	if r := e.ctnet("doctor"); r.Code != 0 || !strings.Contains(r.Stdout, "IPv6 forwarding is on") {
		t.Errorf("doctor after the restore: %s", r)
	}
	if report := e.gc(); len(report) > 0 {
		t.Errorf("gc after the restore found work:\n%s", strings.Join(report, "\n"))
	}
	e.host.Sysctl(t, "net.ipv6.conf.all.forwarding", "0")
	if r := e.ctnet("doctor"); r.Code == 0 || !strings.Contains(r.Stdout+r.Stderr, "IPv6 forwarding is off") {
		t.Errorf("doctor with IPv6 forwarding off: %s", r)
	}
	if report := strings.Join(e.gc(), "\n"); !strings.Contains(report, "IPv6 forwarding on") {
		t.Errorf("gc does not turn IPv6 forwarding on again:\n%s", report)
	}
	e.must("rm", "-f", "b")
	e.host.MustRun(t, "ip", "link", "del", bridge)
	if report := strings.Join(e.gc(), "\n"); !strings.Contains(report, bridge) {
		t.Errorf("gc does not recreate the deleted bridge:\n%s", report)
	}
	if out, _ := e.hostRun("ip", "-6", "addr", "show", "dev", bridge, "scope", "global"); !strings.Contains(out, "fd00:74::1/64") {
		t.Errorf("the bridge gc made lacks its IPv6 gateway:\n%s", out)
	}
	e.must("network", "rm", "dual")
	if got := sysctlIn(e.hostRun, "net.ipv6.conf.all.forwarding"); got != "0" {
		t.Errorf("IPv6 forwarding is %s after the last network, want 0", got)
	}
}

// Networks are isolated over IPv6 as over IPv4, both ways between a routed network
// and a masqueraded one: a container does not reach another network's container by
// its IPv6 address, though its packets reach the host, and a container of that
// network does.
func TestIPv6Isolation(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "left", "--ipv6", "--opt", "masquerade=false")
	e.must("network", "create", "right", "--ipv6")
	for _, name := range []string{"l", "r"} {
		network := map[string]string{"l": "left", "r": "right"}[name]
		e.runDetached(append([]string{"--name", name, "--network", network, "--"}, peerServer6(7000)...)...)
		e.runDetached("--name", name+"2", "--network", network, "--", "sleep", "600")
	}
	probes := []struct{ from, to string }{{"l", "r"}, {"r", "l"}}
	matches := map[string]string{}
	for _, p := range probes {
		to6 := e.ip6(p.to)
		if !eventually(func() bool { return askPeer6(e.containerRun(p.to+"2"), to6, 7000) == e.ip6(p.to+"2") }) {
			t.Fatalf("a container of %s's own network does not reach it over IPv6: the test proves nothing", p.to)
		}
		matches[p.from+"_to_"+p.to] = "ip6 saddr " + e.ip6(p.from) + " ip6 daddr " + to6 + " tcp dport 7000"
	}
	arrived := newCounters(t, e.hostRun, "inet", "type filter hook prerouting priority -400;", matches)
	for _, p := range probes {
		if got := askPeer6(e.containerRun(p.from), e.ip6(p.to), 7000); got != "" {
			t.Errorf("%s on another network reached %s over IPv6 (%s saw %s)", p.from, p.to, p.to, got)
		}
		if arrived.packets(p.from+"_to_"+p.to) == 0 {
			t.Errorf("%s's probe to %s never reached the host: the test proves nothing", p.from, p.to)
		}
	}
	e.must("rm", "-f", "l", "l2", "r", "r2")
	e.must("network", "rm", "left", "right")
}

// ctnet-cni on a network with "ipv6": ADD gives one address of each family (those
// the ips capability names), both in the result with a default route each and both
// in the kernel; the pod reaches the wan over IPv6; CHECK finds a missing IPv6
// address; DEL leaves nothing. With host-local's ranges for both families, the
// network is made around both ranges and the pod gets host-local's address of each
// family, which DEL gives back; without "ipv6" the IPv6 range is left unused.
func TestIPv6CNIDualStack(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	conf := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "dual", "type": "ctnet", "subnet": "10.88.0.0/24", "ipv6": true, "subnet6": "fd00:88::/64", "root": %q,
		"capabilities": {"ips": true}, "runtimeConfig": {"ips": ["10.88.0.50/24", "fd00:88::50/64"]}}`, e.root)
	pod := lab.NewSandbox(t)
	res := p.add("pod", pod.Path, "eth0", conf)
	var addrs, routes []string
	for _, ip := range res.IPs {
		addrs = append(addrs, ip.Address+" via "+ip.Gateway)
	}
	for _, r := range res.Routes {
		routes = append(routes, r.Dst+" via "+r.GW)
	}
	if want := []string{"10.88.0.50/24 via 10.88.0.1", "fd00:88::50/64 via fd00:88::1"}; fmt.Sprint(addrs) != fmt.Sprint(want) {
		t.Errorf("ADD result addresses %q, want %q", addrs, want)
	}
	if want := []string{"0.0.0.0/0 via 10.88.0.1", "::/0 via fd00:88::1"}; fmt.Sprint(routes) != fmt.Sprint(want) {
		t.Errorf("ADD result routes %q, want %q", routes, want)
	}
	if out, _ := pod.Try("ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"); !strings.Contains(out, "fd00:88::50/64") || strings.Contains(out, "tentative") {
		t.Errorf("the pod's eth0 lacks fd00:88::50/64 or has it tentative:\n%s", out)
	}
	if !ping6OK(pod.Try, lab.WANIP6) {
		t.Errorf("the pod does not reach the wan over IPv6")
	}
	if r := p.call("CHECK", "pod", pod.Path, "eth0", withPrevResult(t, conf, res)); r.Code != 0 {
		t.Errorf("CHECK of a good dual-stack attachment: %s", r)
	}
	pod.MustRun(t, "ip", "-6", "addr", "del", "fd00:88::50/64", "dev", "eth0")
	if r := p.call("CHECK", "pod", pod.Path, "eth0", withPrevResult(t, conf, res)); r.Code == 0 || !strings.Contains(r.Stdout, "fd00:88::50/64") {
		t.Errorf("CHECK without the IPv6 address: want an error naming it, got %s", r)
	}
	if r := p.call("DEL", "pod", pod.Path, "eth0", conf); r.Code != 0 {
		t.Errorf("DEL: %s", r)
	}
	e.must("network", "rm", "dual")

	dataDir := t.TempDir()
	for _, tt := range []struct {
		name, ipv6 string
		want       []string // the result's addresses and gateways
	}{
		{"ranges", `"ipv6": true,`, []string{"10.89.0.2/24 via 10.89.0.1", "fd00:89::2/64 via fd00:89::1"}},
		{"ranges-v4", "", []string{"10.89.0.2/24 via 10.89.0.1"}},
	} {
		conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "ctnet", %s "root": %q, "ipam": {"type": "host-local", "dataDir": %q,
			"ranges": [[{"subnet": "10.89.0.0/24"}], [{"subnet": "fd00:89::/64"}]], "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}`, tt.name, tt.ipv6, e.root, dataDir)
		pod := lab.NewSandbox(t)
		res := p.add("pod", pod.Path, "eth0", conf)
		var addrs []string
		for _, ip := range res.IPs {
			addrs = append(addrs, ip.Address+" via "+ip.Gateway)
		}
		if fmt.Sprint(addrs) != fmt.Sprint(tt.want) {
			t.Errorf("%s: ADD result addresses %q, want %q", tt.name, addrs, tt.want)
		}
		var ns []struct{ Subnet, Subnet6 string }
		e.decode(e.must("network", "inspect", "--format", "json", tt.name), &ns)
		out, _ := pod.Try("ip", "-6", "addr", "show", "dev", "eth0", "scope", "global")
		if tt.ipv6 != "" {
			if ns[0].Subnet != "10.89.0.0/24" || ns[0].Subnet6 != "fd00:89::/64" {
				t.Errorf("%s: the network has subnets %q and %q, want host-local's 10.89.0.0/24 and fd00:89::/64", tt.name, ns[0].Subnet, ns[0].Subnet6)
			}
			if !strings.Contains(out, "fd00:89::2/64") || strings.Contains(out, "tentative") {
				t.Errorf("%s: the pod's eth0 lacks host-local's fd00:89::2/64 or has it tentative:\n%s", tt.name, out)
			}
			if !ping6OK(pod.Try, lab.WANIP6) {
				t.Errorf("%s: the pod does not reach the wan over IPv6", tt.name)
			}
		} else if ns[0].Subnet6 != "" || strings.Contains(out, "inet6") {
			t.Errorf("%s: a network without \"ipv6\" took IPv6 from the ranges (subnet6 %q):\n%s", tt.name, ns[0].Subnet6, out)
		}
		if leases := hostLocalLeases(t, dataDir, tt.name); len(leases) != 2 {
			t.Errorf("%s: host-local holds %v, want an address of each family", tt.name, leases)
		}
		if r := p.call("DEL", "pod", pod.Path, "eth0", conf); r.Code != 0 {
			t.Errorf("%s: DEL: %s", tt.name, r)
		}
		if leases := hostLocalLeases(t, dataDir, tt.name); len(leases) != 0 {
			t.Errorf("%s: host-local still holds %v after DEL", tt.name, leases)
		}
		e.must("network", "rm", tt.name)
	}
}
