package e2e

import (
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// On a network created with --opt icc=false (Docker's enable_icc=false) containers
// neither ping nor connect to each other, bridged or routed through their gateway
// (with and without br_netfilter), while each still reaches the wan and the wan
// reaches a published port; the same containers on a default network, the positive
// control, reach each other. Every server answers the host first, so silence is the
// firewall's.
func TestICCFalse(t *testing.T) {
	e := newEnv(t)
	wanServer := e.wan.Command(t.Context(), peerServer(9999)...)
	if err := wanServer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { wanServer.Process.Kill(); wanServer.Wait() }()
	e.must("network", "create", "apart", "--subnet", "10.97.0.0/24", "--opt", "icc=false")
	e.must("network", "create", "together", "--subnet", "10.98.0.0/24")
	for _, c := range []struct{ server, client, net, publish string }{
		{"apart-srv", "apart-cli", "apart", "8097:7000"},
		{"together-srv", "together-cli", "together", "8098:7000"},
	} {
		e.runDetached("--name", c.server, "--network", c.net, "-p", c.publish, "--", "sh", "-c",
			"socat TCP-LISTEN:7000,fork,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR' & socat -u UDP-RECV:7001 STDOUT & wait")
		e.runDetached("--name", c.client, "--network", c.net, "--", "sleep", "600")
	}
	var info struct {
		NoICC bool `json:"no_icc"`
	}
	e.decode(e.must("network", "inspect", "--format", "json", "apart"), &[]any{&info})
	if !info.NoICC {
		t.Errorf("network inspect --format json does not show apart's icc=false")
	}
	if out := e.must("network", "inspect", "apart"); !strings.Contains(out, "icc:        false") {
		t.Errorf("network inspect apart does not say icc: false:\n%s", out)
	}
	if out := e.must("network", "inspect", "together"); !strings.Contains(out, "icc:        true") {
		t.Errorf("network inspect together does not say icc: true:\n%s", out)
	}
	for _, line := range strings.Split(e.must("network", "ls"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && (f[1] == "apart") != strings.Contains(line, "no-icc") {
			t.Errorf("network ls flags no-icc wrongly: %q", line)
		}
	}

	nets := []struct {
		name, gateway string
		port          int
		reaches       bool // whether its containers reach each other
	}{{"apart", "10.97.0.1", 8097, false}, {"together", "10.98.0.1", 8098, true}}
	for _, net := range nets {
		server, client := net.name+"-srv", net.name+"-cli"
		serverIP, clientIP := e.kernelAddr(server, "eth0"), e.kernelAddr(client, "eth0")
		if !eventually(func() bool { return askPeer(e.hostRun, serverIP, 7000) != "" }) {
			t.Fatalf("%s: the server does not answer the host", net.name)
		}
		if !pingOK(e.hostRun, clientIP) {
			t.Errorf("%s: the host cannot ping the client", net.name)
		}
		for _, c := range []string{server, client} {
			if got := askPeer(e.containerRun(c), lab.WANIP, 9999); got != lab.HostUplinkIP {
				t.Errorf("%s: %s reaches the wan as %q, want %s", net.name, c, got, lab.HostUplinkIP)
			}
		}
		if got := askPeer(e.wanRun, lab.HostUplinkIP, net.port); got != lab.WANIP {
			t.Errorf("%s: the published port answers the wan with %q, want %s", net.name, got, lab.WANIP)
		}
		cli := e.containerRun(client)
		for _, brnf := range []string{"1", "0"} {
			e.host.Sysctl(t, "net.bridge.bridge-nf-call-iptables", brnf)
			if got := askPeer(cli, serverIP, 7000) != ""; got != net.reaches {
				t.Errorf("%s, br_netfilter %s: TCP from one container to the other got through: %t, want %t", net.name, brnf, got, net.reaches)
			}
			if got := pingOK(cli, serverIP); got != net.reaches {
				t.Errorf("%s, br_netfilter %s: ping from one container to the other got through: %t, want %t", net.name, brnf, got, net.reaches)
			}
		}
		// Without br_netfilter, a published port of the container's own network
		// reached through the host's address is routed, not bridged, and passes.
		if got := askPeer(cli, lab.HostUplinkIP, net.port); got == "" {
			t.Errorf("%s: the other container does not reach the published port through the host's address", net.name)
		}
		// A container that routes its neighbour through the gateway sends it to the
		// host, which routes it back out of the same bridge.
		if out, err := cli("ip", "route", "add", serverIP+"/32", "via", net.gateway); err != nil {
			t.Fatalf("%s: route the neighbour through the gateway: %v: %s", net.name, err, out)
		}
		if got := askPeer(cli, serverIP, 7000) != ""; got != net.reaches {
			t.Errorf("%s: TCP routed through the gateway from one container to the other got through: %t, want %t", net.name, got, net.reaches)
		}
		// One way, which the bridge's rule for the answers cannot stop.
		if out, err := cli("sh", "-c", "echo routed-probe | socat -u - UDP:"+serverIP+":7001"); err != nil {
			t.Fatalf("%s: send a UDP probe: %v: %s", net.name, err, out)
		}
		// The host's probe, sent after it, arrives after it if it arrives at all.
		if out, err := e.hostRun("sh", "-c", "echo host-probe | socat -u - UDP:"+serverIP+":7001"); err != nil {
			t.Fatalf("%s: send a UDP probe from the host: %v: %s", net.name, err, out)
		}
		if !eventually(func() bool { return strings.Contains(e.must("logs", server), "host-probe") }) {
			t.Fatalf("%s: the host's UDP probe did not arrive", net.name)
		}
		if got := strings.Contains(e.must("logs", server), "routed-probe"); got != net.reaches {
			t.Errorf("%s: a UDP probe routed through the gateway reached the other container: %t, want %t", net.name, got, net.reaches)
		}
		e.host.Sysctl(t, "net.bridge.bridge-nf-call-iptables", "1")
	}
	e.must("rm", "-f", "apart-srv", "apart-cli", "together-srv", "together-cli")
	e.must("network", "rm", "apart", "together")
}
