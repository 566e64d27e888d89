package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// traceTables lists the trace tables nft sees in a namespace (a command prefix).
func traceTables(t *testing.T, run func(args ...string) (string, error)) []string {
	t.Helper()
	out, err := run("nft", "list", "tables")
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	var tables []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "ctnet_trace_") {
			tables = append(tables, strings.TrimSpace(line))
		}
	}
	return tables
}

// noTraceTables fails the test for every trace table nft lists in the host or one
// of the containers named, after what.
func (e *env) noTraceTables(what string, where ...string) {
	e.t.Helper()
	for _, w := range where {
		run := e.hostRun
		if w != "host" {
			run = e.containerRun(w)
		}
		if left := traceTables(e.t, run); len(left) > 0 {
			e.t.Errorf("%s: left %v in %s", what, left, w)
		}
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// trace follows real probes: between two containers of one network it is
// delivered, by the fast path's redirect (or, with the fast path off, past the
// bridge's anti-spoofing accept); between two networks it is
// dropped by the isolation rule, naming both networks; from the host to a published
// port it is DNAT'd to the container; to the wan it is masqueraded to the host's
// uplink address. Each trace leaves no table in any namespace it touched, as nft
// lists them. The dropped probe is the same TCP SYN to the same port as a delivered
// one, so the verdict is the firewall's.
func TestTrace(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "n1", "--subnet", "10.97.1.0/24")
	e.must("network", "create", "n2", "--subnet", "10.97.2.0/24")
	e.runDetached("--name", "a", "--network", "n1", "--", "sleep", "600")
	e.runDetached("--name", "b", "--network", "n1", "--", "sleep", "600")
	e.runDetached("--name", "c", "--network", "n2", "-p", "8080:8000", "--", "sleep", "600")
	cases := []struct {
		name     string
		args     []string
		wantCode int
		want     []string // lines the output must hold; the first is the last line
		hop      string   // a hop's text the output must show
	}{
		{"same network", []string{"a", "b", "--port", "8000"}, 0,
			[]string{"delivered to b:8000", fastPathNote}, "redirect past the bridge into b's eth0"},
		{"same network, icmp", []string{"a", "b"}, 0, []string{"delivered to b"}, "only from a's own MAC and address, to b's on network n1"},
		{"two networks", []string{"a", "c:8000"}, 1,
			[]string{"dropped: isolation between networks n1 and n2"}, "networks are isolated from each other"},
		{"published port from the host", []string{"host", lab.HostUplinkIP + ":8080"}, 0,
			[]string{"delivered to c:8000", "DNAT by published port 8080 to c:8000"}, "published ports, from the host itself"},
		{"published port from another network", []string{"a", lab.HostUplinkIP + ":8080"}, 0,
			[]string{"delivered to c:8000", "DNAT by published port 8080 to c:8000"}, "a published port, reached from another network"},
		{"published port from its own container", []string{"c", lab.HostUplinkIP + ":8080"}, 0,
			[]string{"delivered to c:8000", "DNAT by published port 8080 to c:8000"}, "hairpin: a container reaching a published port of its own network"},
		{"same network, udp", []string{"a", "b:53", "--proto", "udp"}, 0, []string{"delivered to b:53"}, "udp 10.97.1."},
		{"an address nobody has", []string{"a", "10.97.1.250:80"}, 1,
			[]string{"lost: last seen in a at postrouting; nothing answers ARP for 10.97.1.250 on eth0 in a"}, "a          postrouting"},
		{"the wan", []string{"a", lab.WANIP + ":9999"}, 0,
			[]string{"masqueraded to " + lab.HostUplinkIP + ", out of uplink0 toward " + lab.WANIP + ":9999"}, "the way out"},
	}
	bridgeCases := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
		hop      string
	}{
		{"same network, bridge", []string{"a", "b", "--port", "8000"}, 0, []string{"delivered to b:8000"}, "and only from its own address"},
		{"same network, icmp, bridge", []string{"a", "b"}, 0, []string{"delivered to b"}, "bridge ctnet prerouting"},
	}
	for i, c := range append(cases, bridgeCases...) {
		if i == len(cases) {
			e.host.CtnetEnv(t, e.root, []string{"CTNET_FASTPATH=off"}, "gc")
		}
		r := e.ctnet(append([]string{"trace"}, c.args...)...)
		if i >= len(cases) && strings.Contains(r.Stdout, fastPathNote) {
			t.Errorf("%s: the fast path is off, yet trace says it took the probe:\n%s", c.name, r.Stdout)
		}
		t.Log(r.Stdout)
		if r.Code != c.wantCode {
			t.Errorf("%s: trace %v: want exit %d, got %s", c.name, c.args, c.wantCode, r)
			continue
		}
		if got := lastLine(r.Stdout); got != c.want[0] {
			t.Errorf("%s: last line %q, want %q; output:\n%s", c.name, got, c.want[0], r.Stdout)
		}
		for _, w := range c.want[1:] {
			if !strings.Contains(r.Stdout, w+"\n") {
				t.Errorf("%s: output lacks %q:\n%s", c.name, w, r.Stdout)
			}
		}
		if !strings.Contains(r.Stdout, c.hop) {
			t.Errorf("%s: no hop shows %q:\n%s", c.name, c.hop, r.Stdout)
		}
		e.noTraceTables(c.name+": trace", "host", "a", "b", "c")
	}
	e.must("rm", "-f", "a", "b", "c")
	e.must("network", "rm", "n1", "n2")
}

// fastPathNote is trace's note on a probe that the fast path redirected.
const fastPathNote = "the fast path took it past the bridge, whose chains show no hop (ctnet gc with CTNET_FASTPATH=off puts containers back on the bridge)"

// A trace killed with SIGKILL leaves its tables, which gc removes; one sent SIGTERM
// removes its own before it exits. Both traces follow a probe to an address of the
// container's network that nobody has, which waits for its neighbour and so is
// neither delivered, dropped nor gone: they are killed while their tables exist.
func TestTraceKilled(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "a", "--", "sleep", "600")
	start := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := e.host.Command(t.Context(), lab.Binary(t), "--root", e.root, "trace", "--timeout", "2m", "a", "172.17.255.250:9999")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if !eventually(func() bool {
			return len(traceTables(t, e.hostRun)) == 2 && len(traceTables(t, e.containerRun("a"))) == 2
		}) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("trace made no tables in the host and the container: %s", out.String())
		}
		return cmd, &out
	}

	cmd, out := start()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	left := traceTables(t, e.hostRun)
	if len(left) != 2 {
		t.Errorf("SIGKILL: want the killed trace's two tables left in the host, got %v (%s)", left, out)
	}
	if r := e.ctnet("gc"); r.Code != 0 || !strings.Contains(r.Stdout, "removed trace tables") {
		t.Errorf("gc after a killed trace: %s", r)
	} else {
		t.Logf("gc: %s", r.Stdout)
	}
	for _, where := range []string{"host", "a"} {
		run := e.hostRun
		if where != "host" {
			run = e.containerRun(where)
		}
		if left := traceTables(t, run); len(left) > 0 {
			t.Errorf("SIGKILL: gc left %v in %s", left, where)
		}
	}

	cmd, out = start()
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if err == nil {
		t.Errorf("SIGTERM: a trace cut short exited 0: %s", out)
	}
	for _, where := range []string{"host", "a"} {
		run := e.hostRun
		if where != "host" {
			run = e.containerRun(where)
		}
		if left := traceTables(t, run); len(left) > 0 {
			t.Errorf("SIGTERM: the trace left %v in %s: %s", left, where, out)
		}
	}
	if r := e.ctnet("gc"); r.Code != 0 || r.Stdout != "" {
		t.Errorf("gc after a trace that cleaned up: %s", r)
	}
	e.must("rm", "-f", "a")
	e.must("network", "rm", "bridge")
}

// doctor probes each container's way to its gateway and each published port from
// the host, and names the trace that shows where a probe stopped: a table inside
// the container that drops its echo requests and its port's SYNs turns both
// findings into problems, which pass again once the table is gone.
func TestDoctorProbes(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "d", "-p", "8080:8000", "--", "sleep", "600")
	gateway := e.inspect("d").Networks[0].Gateway
	okGateway := "ok: container d reaches its gateway " + gateway + " on network bridge\n"
	okPort := "ok: published port 127.0.0.1:8080/tcp reaches d:8000 from the host\n"
	r := e.ctnet("doctor")
	if r.Code != 0 || !strings.Contains(r.Stdout, okGateway) || !strings.Contains(r.Stdout, okPort) {
		t.Errorf("doctor on a healthy host: want %q and %q, got %s", okGateway, okPort, r)
	}
	block := "add table ip block; " +
		"add chain ip block out { type filter hook output priority 0; }; add rule ip block out icmp type echo-request drop; " +
		"add chain ip block in { type filter hook input priority 0; }; add rule ip block in tcp dport 8000 drop"
	if out, err := e.inContainer("d", "nft", block); err != nil {
		t.Fatalf("nft %s: %v: %s", block, err, out)
	}
	r = e.ctnet("doctor")
	for _, want := range []string{
		"problem: container d does not reach its gateway " + gateway + " on network bridge: dropped: table ip block chain out in d, which is not ctnet's\n",
		"fix: `ctnet trace d " + gateway + "` shows each step",
		"problem: published port 127.0.0.1:8080/tcp does not reach d:8000 from the host: dropped: table ip block chain in in d, which is not ctnet's\n",
		"fix: `ctnet trace host 127.0.0.1:8080 --proto tcp` shows each step",
	} {
		if r.Code != 1 || !strings.Contains(r.Stdout, want) {
			t.Errorf("doctor with the container dropping its probes: want exit 1 and %q, got %s", want, r)
		}
	}
	if out, err := e.inContainer("d", "nft", "delete table ip block"); err != nil {
		t.Fatalf("nft delete table ip block: %v: %s", err, out)
	}
	if r := e.ctnet("doctor"); r.Code != 0 || !strings.Contains(r.Stdout, okGateway) || !strings.Contains(r.Stdout, okPort) {
		t.Errorf("doctor once the container's table is gone: %s", r)
	}
	// Over IPv6: the IPv6 gateway of an IPv6-only and of a dual-stack container, and
	// a dual-stack port's [::] side at the host's address on its network (::1 cannot
	// publish), beside its IPv4 side; a table dropping ICMPv6 echo requests and the
	// port's SYNs over IPv6 alone turns the IPv6 findings into problems.
	e.must("network", "create", "six", "--ipv6", "--ipv4=false")
	e.must("network", "create", "dual", "--ipv6")
	e.runDetached("--name", "v6", "--network", "six", "--", "sleep", "600")
	e.runDetached("--name", "ds", "--network", "dual", "-p", "8081:8000", "--", "sleep", "600")
	v6Gateway, dsGateway6 := e.inspect("v6").Networks[0].Gateway6, e.inspect("ds").Networks[0].Gateway6
	okSix := []string{
		"ok: container v6 reaches its gateway " + v6Gateway + " on network six\n",
		"ok: container ds reaches its gateway " + dsGateway6 + " on network dual\n",
		"ok: published port [" + dsGateway6 + "]:8081/tcp reaches ds:8000 from the host\n",
	}
	okDual := []string{
		"ok: container ds reaches its gateway " + e.inspect("ds").Networks[0].Gateway + " on network dual\n",
		"ok: published port 127.0.0.1:8081/tcp reaches ds:8000 from the host\n",
	}
	r = e.ctnet("doctor")
	for _, want := range append(okSix, okDual...) {
		if r.Code != 0 || !strings.Contains(r.Stdout, want) {
			t.Errorf("doctor with an IPv6-only and a dual-stack container: want exit 0 and %q, got %s", want, r)
		}
	}
	block6 := "add table ip6 block; " +
		"add chain ip6 block out { type filter hook output priority 0; }; add rule ip6 block out icmpv6 type echo-request drop; " +
		"add chain ip6 block in { type filter hook input priority 0; }; add rule ip6 block in tcp dport 8000 drop"
	for _, name := range []string{"v6", "ds"} {
		if out, err := e.inContainer(name, "nft", block6); err != nil {
			t.Fatalf("nft %s in %s: %v: %s", block6, name, err, out)
		}
	}
	r = e.ctnet("doctor")
	for _, want := range []string{
		"problem: container v6 does not reach its gateway " + v6Gateway + " on network six: dropped: table ip6 block chain out in v6, which is not ctnet's\n",
		"problem: container ds does not reach its gateway " + dsGateway6 + " on network dual: dropped: table ip6 block chain out in ds, which is not ctnet's\n",
		"problem: published port [" + dsGateway6 + "]:8081/tcp does not reach ds:8000 from the host: dropped: table ip6 block chain in in ds, which is not ctnet's\n",
		"fix: `ctnet trace host [" + dsGateway6 + "]:8081 --proto tcp` shows each step",
	} {
		if r.Code != 1 || !strings.Contains(r.Stdout, want) {
			t.Errorf("doctor with the containers dropping their IPv6 probes: want exit 1 and %q, got %s", want, r)
		}
	}
	for _, want := range okDual {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("doctor with ds dropping only its IPv6 probes: want %q, got %s", want, r)
		}
	}
	e.must("rm", "-f", "d", "v6", "ds")
	e.must("network", "rm", "bridge", "six", "dual")
}

// trace follows IPv6 probes as it does IPv4 ones, on dual-stack and IPv6-only
// networks: a TCP or UDP probe between two containers of one network goes by the fast
// path, an ICMPv6 echo by the bridge (which the fast path leaves every ICMPv6
// message to); between two networks it is dropped by the isolation rule; to a port
// published on [::] it is DNAT'd to the container's IPv6 address (from the host,
// another network and the container itself); to the wan it is
// masqueraded to the host's uplink address (NAT66); to an address nobody has it waits
// for a neighbour that does not answer. A container's name is its IPv4 address while
// the sender has IPv4, else (or with -6) its IPv6 one. Asking for a family the
// container lacks, or for both, is refused in one line. No trace leaves a table.
func TestTraceIPv6(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "d1", "--ipv6", "--subnet", "10.97.11.0/24", "--subnet", "fd00:97:11::/64")
	e.must("network", "create", "d2", "--ipv6", "--subnet", "10.97.12.0/24", "--subnet", "fd00:97:12::/64")
	e.must("network", "create", "six", "--ipv6", "--ipv4=false", "--subnet", "fd00:97:13::/64")
	e.must("network", "create", "four", "--subnet", "10.97.14.0/24")
	e.runDetached("--name", "a", "--network", "d1", "--", "sleep", "600")
	e.runDetached("--name", "b", "--network", "d1", "--", "sleep", "600")
	e.runDetached("--name", "c", "--network", "d2", "-p", "8080:8000", "--", "sleep", "600")
	e.runDetached("--name", "v6", "--network", "six", "--", "sleep", "600")
	e.runDetached("--name", "v4", "--network", "four", "--", "sleep", "600")
	a6, b6, c6, v66 := e.ip6("a"), e.ip6("b"), e.ip6("c"), e.ip6("v6")
	uplink6 := "[" + lab.HostUplinkIP6 + "]:8080"
	cases := []struct {
		name     string
		args     []string
		wantCode int
		want     []string // lines the output must hold; the first is the last line
		hops     []string // texts the hops must show
		not      string   // a text the output must not show
	}{
		{"same network, tcp", []string{"-6", "a", "b", "--port", "8000"}, 0,
			[]string{"delivered to b:8000", fastPathNote},
			[]string{"redirect past the bridge into b's eth0", "tcp [" + a6 + "]:", " > [" + b6 + "]:8000"}, ""},
		{"same network, udp", []string{"a", "[" + b6 + "]:53", "--proto", "udp"}, 0,
			[]string{"delivered to b:53", fastPathNote}, []string{"udp [" + a6 + "]:"}, ""},
		{"same network, icmpv6", []string{"-6", "a", "b"}, 0, []string{"delivered to b"},
			[]string{"icmpv6 " + a6 + " > " + b6, "bridge ctnet prerouting", "ip6 saddr @"}, fastPathNote},
		{"a name is its IPv4 address to a sender with IPv4", []string{"a", "b", "--port", "8000"}, 0,
			[]string{"delivered to b:8000"}, []string{"tcp 10.97.11."}, b6},
		{"two networks", []string{"-6", "a", "c:8000"}, 1,
			[]string{"dropped: isolation between networks d1 and d2"}, []string{"networks are isolated from each other", " > [" + c6 + "]:8000"}, ""},
		{"published port from the host", []string{"host", uplink6}, 0,
			[]string{"delivered to c:8000", "DNAT by published port 8080 to c:8000"},
			[]string{"published ports, from the host itself", " > [" + c6 + "]:8000"}, ""},
		{"published port from another network", []string{"a", uplink6}, 0,
			[]string{"delivered to c:8000", "DNAT by published port 8080 to c:8000"},
			[]string{"a published port, reached from another network", " > [" + c6 + "]:8000"}, ""},
		{"published port from its own container", []string{"c", uplink6}, 0,
			[]string{"delivered to c:8000", "DNAT by published port 8080 to c:8000"},
			[]string{"ct status dnat ip6 saddr . oifname @subnets6 masquerade", " > [" + c6 + "]:8000"}, ""},
		{"the wan", []string{"a", "[" + lab.WANIP6 + "]:9999"}, 0,
			[]string{"masqueraded to " + lab.HostUplinkIP6 + ", out of uplink0 toward [" + lab.WANIP6 + "]:9999"},
			[]string{"the way out, IPv6 (NAT66)"}, ""},
		{"an address nobody has", []string{"a", "[fd00:97:11::250]:80"}, 1,
			[]string{"lost: last seen in a at postrouting; nothing answers neighbour solicitations for fd00:97:11::250 on eth0 in a"},
			[]string{" > [fd00:97:11::250]:80"}, ""},
		{"an IPv6-only container by name", []string{"host", "v6", "--port", "8000"}, 0,
			[]string{"delivered to v6:8000"}, []string{" > [" + v66 + "]:8000"}, ""},
	}
	for _, c := range cases {
		r := e.ctnet(append([]string{"trace"}, c.args...)...)
		t.Log(r.Stdout)
		if r.Code != c.wantCode {
			t.Errorf("%s: trace %v: want exit %d, got %s", c.name, c.args, c.wantCode, r)
		} else if got := lastLine(r.Stdout); got != c.want[0] {
			t.Errorf("%s: last line %q, want %q; output:\n%s", c.name, got, c.want[0], r.Stdout)
		}
		for _, w := range c.want[1:] {
			if !strings.Contains(r.Stdout, w+"\n") {
				t.Errorf("%s: output lacks %q:\n%s", c.name, w, r.Stdout)
			}
		}
		for _, hop := range c.hops {
			if !strings.Contains(r.Stdout, hop) {
				t.Errorf("%s: no hop shows %q:\n%s", c.name, hop, r.Stdout)
			}
		}
		if c.not != "" && strings.Contains(r.Stdout, c.not) {
			t.Errorf("%s: output shows %q:\n%s", c.name, c.not, r.Stdout)
		}
		e.noTraceTables(c.name+": trace", "host", "a", "b", "c", "v6")
	}
	// With the fast path off the same network's IPv6 TCP takes the bridge, and trace
	// says so.
	e.host.CtnetEnv(t, e.root, []string{"CTNET_FASTPATH=off"}, "gc")
	r := e.ctnet("trace", "-6", "a", "b", "--port", "8000")
	t.Log(r.Stdout)
	if r.Code != 0 || lastLine(r.Stdout) != "delivered to b:8000" || strings.Contains(r.Stdout, fastPathNote) || !strings.Contains(r.Stdout, "ip6 saddr @") {
		t.Errorf("same network, tcp, fast path off: want delivered by the bridge, no fast path note, got %s", r)
	}
	e.noTraceTables("same network, tcp, fast path off", "host", "a", "b")
	// Refusals, each after the same probe without the flag is followed.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-6", "a", "v4"}, "container v4 has no IPv6 address: trace it without -6, or connect it to a network made with --ipv6"},
		{[]string{"-4", "host", "v6"}, "container v6 has no IPv4 address (its networks are IPv6-only): trace it without -4"},
		{[]string{"-4", "-6", "a", "b"}, "-4 and -6 exclude each other: choose the probe's one IP version"},
		{[]string{"-6", "a", e.ip("b")}, e.ip("b") + " is an IPv4 address, and -6 asks for IPv6: leave the flag out"},
	} {
		if r := e.ctnet(append([]string{"trace"}, c.args[1:]...)...); r.Stderr != "" || r.Code > 1 {
			t.Errorf("trace %v: want no error, got %s", c.args[1:], r)
		}
		r := e.ctnet(append([]string{"trace"}, c.args...)...)
		if first, _, _ := strings.Cut(r.Stderr, "\n"); r.Code == 0 || r.Stdout != "" || !strings.Contains(first, c.want) {
			t.Errorf("trace %v: want a failure whose first line says %q, got %s", c.args, c.want, r)
		}
	}
	e.noTraceTables("the refusals", "host", "a", "v4", "v6")
	e.must("rm", "-f", "a", "b", "c", "v6", "v4")
	e.must("network", "rm", "d1", "d2", "six", "four")
}
