package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// The ways runtimes ask for a pod's address and MAC, checked with iproute2 and with
// traffic (the bridge table lets a port send only with its recorded MAC): CNI_ARGS IP=
// and MAC=, which Podman sends for a single --ip and for --mac-address, and the ips
// and mac capabilities (with the address twice, as Podman 4.3's network reload sends
// a --ip). A repeated ADD after a DEL (podman network reload) gets the
// same address; requests that disagree or that no interface can hold are refused
// without a trace.
func TestCNIPluginAddressArgs(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	conf := func(extra string) string {
		return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "podnet", "type": "ctnet", "subnet": "10.88.0.0/24", "root": %q%s}`, e.root, extra)
	}
	podA, podB := lab.NewSandbox(t), lab.NewSandbox(t)
	withArgs := func(args string) cniPlugin { q := p; q.args = args; return q }
	podmanArgs := withArgs("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.88.0.50;MAC=02:00:0a:58:00:50")

	for _, c := range []struct {
		name      string
		plugin    cniPlugin
		pod       *lab.Sandbox
		conf      string
		addr, mac string
	}{
		{"CNI_ARGS", podmanArgs, podA, conf(""), "10.88.0.50/24", "02:00:0a:58:00:50"},
		{"the ips and mac capabilities", p, podB,
			conf(`, "capabilities": {"ips": true, "mac": true}, "runtimeConfig": {"ips": ["10.88.0.60/24", "10.88.0.60"], "mac": "02:00:0A:58:00:60"}`),
			"10.88.0.60/24", "02:00:0a:58:00:60"},
	} {
		id := "pod-" + strings.ReplaceAll(c.addr[:len(c.addr)-3], ".", "-")
		res := c.plugin.add(id, c.pod.Path, "eth0", c.conf)
		if got := e.podAddrs(c.pod, "eth0"); !slices.Equal(got, []string{c.addr}) {
			t.Errorf("%s: eth0 holds %v, want %s", c.name, got, c.addr)
		}
		if got := macOf(t, c.pod.Try, "eth0"); got != c.mac {
			t.Errorf("%s: eth0's MAC is %s, want %s", c.name, got, c.mac)
		}
		if len(res.Interfaces) != 2 || res.Interfaces[1].MAC != c.mac || len(res.IPs) != 1 || res.IPs[0].Address != c.addr {
			t.Errorf("%s: the result does not give %s and %s: %+v", c.name, c.addr, c.mac, res)
		}
		if !pingOK(c.pod.Try, "10.88.0.1") || !pingOK(c.pod.Try, lab.WANIP) {
			t.Errorf("%s: the pod with MAC %s reaches neither its gateway nor the wan", c.name, c.mac)
		}
	}
	if !pingOK(podA.Try, "10.88.0.60") {
		t.Errorf("the pod at 10.88.0.50 does not reach the one at 10.88.0.60")
	}

	// podman network reload: DEL, then ADD with the same arguments.
	if r := podmanArgs.call("DEL", "pod-10-88-0-50", podA.Path, "eth0", conf("")); r.Code != 0 {
		t.Fatalf("DEL: %s", r)
	}
	podmanArgs.add("pod-10-88-0-50", podA.Path, "eth0", conf(""))
	if got := e.podAddrs(podA, "eth0"); !slices.Equal(got, []string{"10.88.0.50/24"}) || macOf(t, podA.Try, "eth0") != "02:00:0a:58:00:50" {
		t.Errorf("after DEL and ADD eth0 holds %v with MAC %s, want 10.88.0.50/24 and 02:00:0a:58:00:50", got, macOf(t, podA.Try, "eth0"))
	}

	podC := lab.NewSandbox(t)
	for _, c := range []struct {
		args, conf, want string
	}{
		{"IP=10.88.0.70", conf(`, "runtimeConfig": {"ips": ["10.88.0.71/24"]}`), "ask for different addresses"},
		{"MAC=02:00:00:00:00:70", conf(`, "runtimeConfig": {"mac": "02:00:00:00:00:71"}`), "ask for different addresses"},
		{"MAC=03:00:00:00:00:70", conf(""), "multicast"},
		{"MAC=00:00:00:00:00:00", conf(""), "all-zero"},
		{"MAC=web", conf(""), "CNI_ARGS MAC"},
		{"IP=10.88.0.300", conf(""), "CNI_ARGS IP"},
		{"IP=10.88.0.50", conf(""), "already used by container cni-pod-10-88-0-50"},
	} {
		r := withArgs(c.args).call("ADD", "pod-c", podC.Path, "eth0", c.conf)
		if r.Code == 0 || !strings.Contains(r.Stdout, c.want) || !strings.Contains(r.Stdout, `"code"`) {
			t.Errorf("ADD with CNI_ARGS %s and %s: want an error saying %q, got %s", c.args, c.conf, c.want, r)
		}
	}
	if _, made := e.linksIn(lab.InNetNS(podC.Path))["eth0"]; made {
		t.Errorf("a refused ADD left eth0 in the pod")
	}

	for _, del := range []struct {
		id  string
		pod *lab.Sandbox
	}{{"pod-10-88-0-50", podA}, {"pod-10-88-0-60", podB}} {
		if r := p.call("DEL", del.id, del.pod.Path, "eth0", conf("")); r.Code != 0 {
			t.Errorf("DEL %s: %s", del.id, r)
		}
	}
	e.must("network", "rm", "podnet")
}

// serveName runs, in sb until the test ends, a TCP server that answers every
// connection with name, so a test knows which of two listeners it reached.
func serveName(t *testing.T, sb *lab.Sandbox, port int, name string) {
	t.Helper()
	server := sb.Command(t.Context(), "socat", fmt.Sprintf("TCP-LISTEN:%d,fork,reuseaddr", port), "SYSTEM:echo "+name)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() })
}

// A runtime holds the host ports it asks the plugin to publish (rootful Podman keeps
// them open in conmon, and Podman's network reload ADDs again while it does): a host
// socket on the port is no clash for the plugin, and the wan reaches the pod, not
// that socket. A port another pod publishes still is a clash.
func TestCNIPluginRuntimeHoldsHostPort(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "podnet", "type": "ctnet", "subnet": "10.88.0.0/24", "root": %q,
		"capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": [{"hostPort": 8085, "containerPort": 80, "protocol": "tcp"}]}}`, e.root)
	serveName(t, e.host, 8085, "runtime")
	if !eventually(func() bool { return askPeer(e.hostRun, "127.0.0.1", 8085) == "runtime" }) {
		t.Fatal("the runtime's socket on 8085 does not answer")
	}

	podA, podB := lab.NewSandbox(t), lab.NewSandbox(t)
	if r := p.call("ADD", "pod-a", podA.Path, "eth0", conf); r.Code != 0 {
		t.Fatalf("ADD of a port the runtime holds: %s", r)
	}
	serveName(t, podA, 80, "pod-a")
	if !eventually(func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, 8085) == "pod-a" }) {
		t.Errorf("the wan does not reach pod-a through 8085")
	}
	if r := p.call("ADD", "pod-b", podB.Path, "eth0", conf); r.Code == 0 || !strings.Contains(r.Stdout, "already published by container cni-pod-a") {
		t.Errorf("ADD of a port another pod publishes: want a refusal naming it, got %s", r)
	}
	if _, made := e.linksIn(lab.InNetNS(podB.Path))["eth0"]; made {
		t.Errorf("the refused ADD left eth0 in pod-b")
	}
	for _, pod := range []struct {
		id string
		sb *lab.Sandbox
	}{{"pod-a", podA}, {"pod-b", podB}} {
		if r := p.call("DEL", pod.id, pod.sb.Path, "eth0", conf); r.Code != 0 {
			t.Errorf("DEL %s: %s", pod.id, r)
		}
	}
	if got := askPeer(e.hostRun, "127.0.0.1", 8085); got != "runtime" {
		t.Errorf("after DEL, 8085 on the host answers %q, want the runtime's socket", got)
	}
	e.must("network", "rm", "podnet")
}

// Podman gives a container's port mappings to each of its networks: the plugin
// publishes them with the first and takes the same ones with a further network as
// already done (one element in nftables), while different ones are refused.
func TestCNIPluginPortsOnEveryNetwork(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	conf := func(name, subnet, mappings string) string {
		return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "ctnet", "subnet": %q, "root": %q,
			"capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": [%s]}}`, name, subnet, e.root, mappings)
	}
	const web, dns = `{"hostPort": 8085, "containerPort": 80, "protocol": "tcp"}`, `{"hostPort": 8053, "containerPort": 53, "protocol": "udp"}`
	pod := lab.NewSandbox(t)
	p.add("pod-a", pod.Path, "eth0", conf("neta", "10.88.0.0/24", web+","+dns))
	second := p.add("pod-a", pod.Path, "eth1", conf("netb", "10.89.0.0/24", dns+","+web))
	if got := e.podAddrs(pod, "eth1"); len(second.IPs) != 1 || !slices.Equal(got, []string{second.IPs[0].Address}) {
		t.Errorf("eth1 holds %v, the result says %+v", got, second.IPs)
	}
	serveName(t, pod, 80, "pod-a")
	if !eventually(func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, 8085) == "pod-a" }) {
		t.Errorf("the wan does not reach pod-a through 8085")
	}
	_, elements := e.nftElements()
	var published []string
	for el := range elements {
		if strings.Contains(el, " 8085 ") || strings.Contains(el, " 8053 ") {
			published = append(published, el)
		}
	}
	if len(published) != 2 {
		t.Errorf("want one element each for 8085 and 8053, have %v", published)
	}
	for _, mappings := range []string{web, web + "," + dns + `,{"hostPort": 8086, "containerPort": 80, "protocol": "tcp"}`,
		`{"hostPort": 8085, "containerPort": 81, "protocol": "tcp"}` + "," + dns} {
		r := p.call("ADD", "pod-a", pod.Path, "eth2", conf("netc", "10.87.0.0/24", mappings))
		if r.Code == 0 || !strings.Contains(r.Stdout, "port mappings go with a container's first network") {
			t.Errorf("ADD on a third network with the mappings %s: want a refusal, got %s", mappings, r)
		}
	}
	if _, made := e.linksIn(lab.InNetNS(pod.Path))["eth2"]; made {
		t.Errorf("a refused ADD left eth2 in the pod")
	}
	for _, del := range []struct{ ifName, conf string }{{"eth1", conf("netb", "10.89.0.0/24", web)}, {"eth0", conf("neta", "10.88.0.0/24", web)}} {
		if r := p.call("DEL", "pod-a", pod.Path, del.ifName, del.conf); r.Code != 0 {
			t.Errorf("DEL %s: %s", del.ifName, r)
		}
	}
	e.must("network", "rm", "neta", "netb", "netc")
}

// Podman attaches a container's networks in no fixed order and gives each the port
// mappings: when eth1's network comes first, the port must still end up on eth0's
// address, where the default route sends the replies.
func TestCNIPluginPortsFollowEth0(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	conf := func(name, subnet string) string {
		return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "ctnet", "subnet": %q, "root": %q,
			"capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": [{"hostPort": 8085, "containerPort": 80, "protocol": "tcp"}]}}`, name, subnet, e.root)
	}
	pod := lab.NewSandbox(t)
	p.add("pod-a", pod.Path, "eth1", conf("netb", "10.89.0.0/24"))
	first := p.add("pod-a", pod.Path, "eth0", conf("neta", "10.88.0.0/24"))
	serveName(t, pod, 80, "pod-a")
	if !eventually(func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, 8085) == "pod-a" }) {
		t.Errorf("the wan does not reach pod-a through 8085")
	}
	eth0IP, _, _ := strings.Cut(first.IPs[0].Address, "/")
	_, elements := e.nftElements()
	var published []string
	for el := range elements {
		if strings.Contains(el, " 8085 ") {
			published = append(published, el)
		}
	}
	if len(published) != 1 || !strings.Contains(published[0], eth0IP+" ") {
		t.Errorf("want 8085 published once, to eth0's %s; have %v", eth0IP, published)
	}
	for _, del := range []struct{ ifName, conf string }{{"eth0", conf("neta", "10.88.0.0/24")}, {"eth1", conf("netb", "10.89.0.0/24")}} {
		if r := p.call("DEL", "pod-a", pod.Path, del.ifName, del.conf); r.Code != 0 {
			t.Errorf("DEL %s: %s", del.ifName, r)
		}
	}
	e.must("network", "rm", "neta", "netb")
}
