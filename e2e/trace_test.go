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
		for _, where := range []string{"host", "a", "b", "c"} {
			run := e.hostRun
			if where != "host" {
				run = e.containerRun(where)
			}
			if left := traceTables(t, run); len(left) > 0 {
				t.Errorf("%s: trace left %v in %s", c.name, left, where)
			}
		}
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
	// What trace does not follow (IPv6 with no IPv4 gateway, a dual-stack port's [::]
	// side) is not probed, and so not a problem; the IPv4 side still is.
	e.must("network", "create", "six", "--ipv6", "--ipv4=false")
	e.must("network", "create", "dual", "--ipv6")
	e.runDetached("--name", "v6", "--network", "six", "--", "sleep", "600")
	e.runDetached("--name", "ds", "--network", "dual", "-p", "8081:8000", "--", "sleep", "600")
	okDual := "ok: published port 127.0.0.1:8081/tcp reaches ds:8000 from the host\n"
	if r := e.ctnet("doctor"); r.Code != 0 || !strings.Contains(r.Stdout, okDual) || strings.Contains(r.Stdout, "container v6") {
		t.Errorf("doctor with an IPv6-only and a dual-stack container: want exit 0, %q and no probe of v6, got %s", okDual, r)
	}
	e.must("rm", "-f", "d", "v6", "ds")
	e.must("network", "rm", "bridge", "six", "dual")
}
