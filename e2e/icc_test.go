package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// On a dual-stack network created with --opt icc=false (Docker's enable_icc=false)
// containers neither ping nor connect nor send UDP to each other, in either direction
// and over either family, bridged or routed through their gateway (with and without
// br_netfilter), while each still reaches the wan and the wan reaches a published
// port; the same containers on a default network, the positive control, reach each
// other. Every server answers the host first, so silence is the firewall's.
func TestICCFalse(t *testing.T) {
	e := newEnv(t)
	wanServer := e.wan.Command(t.Context(), peerServer6(9999)...)
	if err := wanServer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { wanServer.Process.Kill(); wanServer.Wait() }()
	e.must("network", "create", "apart", "--ipv6", "--subnet", "10.97.0.0/24", "--subnet", "2001:db8:97::/64", "--opt", "icc=false")
	e.must("network", "create", "together", "--ipv6", "--subnet", "10.98.0.0/24", "--subnet", "2001:db8:98::/64")
	// Each container serves TCP on 7000 and prints the UDP datagrams it gets on 7001,
	// over both families.
	serve := "socat TCP6-LISTEN:7000,fork,reuseaddr,ipv6only=0 'SYSTEM:echo $SOCAT_PEERADDR' & socat -u UDP6-RECV:7001,ipv6only=0 STDOUT & wait"
	for _, c := range []struct{ net, publish string }{{"apart", "8097:7000"}, {"together", "8098:7000"}} {
		e.runDetached("--name", c.net+"-a", "--network", c.net, "-p", c.publish, "--", "sh", "-c", serve)
		e.runDetached("--name", c.net+"-b", "--network", c.net, "--", "sh", "-c", serve)
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

	var gateways struct {
		Gateway  string `json:"gateway"`
		Gateway6 string `json:"gateway6"`
	}
	for _, net := range []struct {
		name    string
		port    int
		reaches bool // whether its containers reach each other
	}{{"apart", 8097, false}, {"together", 8098, true}} {
		e.decode(e.must("network", "inspect", "--format", "json", net.name), &[]any{&gateways})
		for _, fam := range []struct {
			name, gateway, host, wan string
			addr                     func(container string) string
			ping                     func(run func(args ...string) (string, error), addr string) bool
			prefix                   string
		}{
			{"IPv4", gateways.Gateway, lab.HostUplinkIP, lab.WANIP, func(c string) string { return e.kernelAddr(c, "eth0") }, pingOK, "/32"},
			{"IPv6", gateways.Gateway6, lab.HostUplinkIP6, lab.WANIP6, e.ip6, ping6OK, "/128"},
		} {
			for _, dir := range [][2]string{{net.name + "-a", net.name + "-b"}, {net.name + "-b", net.name + "-a"}} {
				client, server := dir[0], dir[1]
				what := fmt.Sprintf("%s, %s, %s to %s", net.name, fam.name, client, server)
				serverIP := fam.addr(server)
				if !eventually(func() bool { return askPeer6(e.hostRun, serverIP, 7000) != "" }) {
					t.Fatalf("%s: the server does not answer the host", what)
				}
				if !fam.ping(e.hostRun, serverIP) {
					t.Errorf("%s: the host cannot ping the server", what)
				}
				cli := e.containerRun(client)
				if got := askPeer6(cli, fam.wan, 9999); got != fam.host {
					t.Errorf("%s: the client reaches the wan as %q, want %s", what, got, fam.host)
				}
				for _, brnf := range []string{"1", "0"} {
					e.host.Sysctl(t, "net.bridge.bridge-nf-call-iptables", brnf)
					e.host.Sysctl(t, "net.bridge.bridge-nf-call-ip6tables", brnf)
					if got := askPeer6(cli, serverIP, 7000) != ""; got != net.reaches {
						t.Errorf("%s, br_netfilter %s: TCP got through: %t, want %t", what, brnf, got, net.reaches)
					}
					if got := fam.ping(cli, serverIP); got != net.reaches {
						t.Errorf("%s, br_netfilter %s: ping got through: %t, want %t", what, brnf, got, net.reaches)
					}
					if got := e.udpArrives(cli, server, serverIP, fmt.Sprintf("bridged-%s-%s-%s", fam.name, client, brnf)); got != net.reaches {
						t.Errorf("%s, br_netfilter %s: a UDP probe got through: %t, want %t", what, brnf, got, net.reaches)
					}
				}
				// A client that routes the server through the gateway sends it to the
				// host, which routes it back out of the same bridge. It ignores the
				// host's redirects, which would send the rest of its packets bridged.
				if out, err := cli("sysctl", "-q", "-w", "net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.eth0.accept_redirects=0",
					"net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.eth0.accept_redirects=0"); err != nil {
					t.Fatalf("%s: ignore redirects: %v: %s", what, err, out)
				}
				if out, err := cli("ip", "route", "add", serverIP+fam.prefix, "via", fam.gateway); err != nil {
					t.Fatalf("%s: route the server through the gateway: %v: %s", what, err, out)
				}
				if got := askPeer6(cli, serverIP, 7000) != ""; got != net.reaches {
					t.Errorf("%s: TCP routed through the gateway got through: %t, want %t", what, got, net.reaches)
				}
				if got := fam.ping(cli, serverIP); got != net.reaches {
					t.Errorf("%s: ping routed through the gateway got through: %t, want %t", what, got, net.reaches)
				}
				if got := e.udpArrives(cli, server, serverIP, fmt.Sprintf("routed-%s-%s", fam.name, client)); got != net.reaches {
					t.Errorf("%s: a UDP probe routed through the gateway got through: %t, want %t", what, got, net.reaches)
				}
				if out, err := cli("ip", "route", "del", serverIP+fam.prefix); err != nil {
					t.Fatalf("%s: remove the route through the gateway: %v: %s", what, err, out)
				}
				e.host.Sysctl(t, "net.bridge.bridge-nf-call-iptables", "1")
				e.host.Sysctl(t, "net.bridge.bridge-nf-call-ip6tables", "1")
			}
			if got := askPeer6(e.wanRun, fam.host, net.port); got != fam.wan {
				t.Errorf("%s, %s: the published port answers the wan with %q, want %s", net.name, fam.name, got, fam.wan)
			}
		}
		// Without br_netfilter, a published port of the container's own network
		// reached through the host's address is routed, not bridged, and passes (with
		// it, bridged, it does not: ARCHITECTURE's "The firewall").
		e.host.Sysctl(t, "net.bridge.bridge-nf-call-iptables", "0")
		e.host.Sysctl(t, "net.bridge.bridge-nf-call-ip6tables", "0")
		for _, host := range []string{lab.HostUplinkIP, lab.HostUplinkIP6} {
			if got := askPeer6(e.containerRun(net.name+"-b"), host, net.port); got == "" {
				t.Errorf("%s: the other container does not reach the published port through the host's address %s", net.name, host)
			}
		}
		e.host.Sysctl(t, "net.bridge.bridge-nf-call-iptables", "1")
		e.host.Sysctl(t, "net.bridge.bridge-nf-call-ip6tables", "1")
	}
	e.must("rm", "-f", "apart-a", "apart-b", "together-a", "together-b")
	e.must("network", "rm", "apart", "together")
}

// udpArrives sends server a UDP datagram carrying probe from the client (run), then
// one from the host, and tells whether the client's arrived: the host's, sent after
// it, arrives after it if it arrives at all.
func (e *env) udpArrives(run func(args ...string) (string, error), server, serverIP, probe string) bool {
	e.t.Helper()
	to := fmt.Sprintf("UDP:%s:7001", serverIP)
	if strings.Contains(serverIP, ":") {
		to = fmt.Sprintf("UDP6:[%s]:7001", serverIP)
	}
	if out, err := run("sh", "-c", "echo "+probe+" | socat -u - "+to); err != nil {
		e.t.Fatalf("send the UDP probe %s: %v: %s", probe, err, out)
	}
	if out, err := e.hostRun("sh", "-c", "echo host-"+probe+" | socat -u - "+to); err != nil {
		e.t.Fatalf("send the UDP probe host-%s: %v: %s", probe, err, out)
	}
	if !eventually(func() bool { return strings.Contains(e.must("logs", server), "host-"+probe) }) {
		e.t.Fatalf("the host's UDP probe host-%s did not arrive at %s", probe, server)
	}
	for _, line := range strings.Split(e.must("logs", server), "\n") {
		if strings.TrimSpace(line) == probe {
			return true
		}
	}
	return false
}
