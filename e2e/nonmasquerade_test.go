package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// A network's nonMasqueradeCIDRs (ip-masq-agent's semantics) are reached with the
// container's own address, and reach the container by routing, while every other
// destination still sees the host's address and reaches nothing; the ranges are in
// the network's inspect output, doctor finds one missing and gc puts it back; a bad
// range is refused in one line naming the key, changing nothing.
func TestNonMasqueradeCIDRs(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	// The wan holds an address outside the unmasqueraded range too, and routes the
	// pod subnet to the host, as a cluster's routes would.
	const elsewhere = "198.18.0.1"
	e.wan.AddLoopbackAddr(t, elsewhere+"/32")
	e.wan.MustRun(t, "ip", "route", "add", "10.77.0.0/24", "via", lab.HostUplinkIP)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "pods", "type": "ctnet", "subnet": "10.77.0.0/24", "root": %q, "nonMasqueradeCIDRs": ["203.0.113.0/24"]}`, e.root)
	pod := lab.NewSandbox(t)
	res := p.add("pod", pod.Path, "eth0", conf)
	podIP, _, _ := strings.Cut(res.IPs[0].Address, "/")

	server := e.wan.Command(t.Context(), peerServer(7000)...)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { server.Process.Kill(); server.Wait() }()
	var seen string
	if !eventually(func() bool { seen = askPeer(pod.Try, lab.WANIP, 7000); return seen != "" }) {
		t.Fatalf("the pod does not reach the wan's server at %s", lab.WANIP)
	}
	if seen != podIP {
		t.Errorf("the wan at %s, inside nonMasqueradeCIDRs, saw the pod as %s, want its own address %s", lab.WANIP, seen, podIP)
	}
	if seen := askPeer(pod.Try, elsewhere, 7000); seen != lab.HostUplinkIP {
		t.Errorf("%s, outside nonMasqueradeCIDRs, saw the pod as %q, want the host's %s", elsewhere, seen, lab.HostUplinkIP)
	}

	// The other way: a peer in the range reaches the pod by its address, one outside
	// it does not.
	podServer := pod.Command(t.Context(), peerServer(7001)...)
	if err := podServer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { podServer.Process.Kill(); podServer.Wait() }()
	if !eventually(func() bool { seen = askPeer(e.wanRun, podIP, 7001); return seen != "" }) || seen != lab.WANIP {
		t.Errorf("the wan at %s, inside nonMasqueradeCIDRs, does not reach the pod at %s by routing (it saw %q)", lab.WANIP, podIP, seen)
	}
	fromElsewhere := func(args ...string) (string, error) {
		return e.wanRun(append([]string{"socat", "-T2", "-"}, fmt.Sprintf("TCP:%s:7001,connect-timeout=2,bind=%s", podIP, elsewhere))...)
	}
	if out, err := fromElsewhere(); err == nil {
		t.Errorf("a wan address outside nonMasqueradeCIDRs reached the pod by routing: %q", out)
	}

	if out := e.must("network", "inspect", "pods"); !strings.Contains(out, "not masqueraded to: 203.0.113.0/24") ||
		!strings.Contains(out, `unmasqueraded: 203.0.113.0 . "`) {
		t.Errorf("network inspect does not show the range and its firewall element:\n%s", out)
	}
	var networks []struct {
		Bridge        string   `json:"bridge"`
		NonMasquerade []string `json:"non_masquerade"`
	}
	e.decode(e.must("network", "inspect", "--format", "json", "pods"), &networks)
	if len(networks) != 1 || !slices.Equal(networks[0].NonMasquerade, []string{"203.0.113.0/24"}) {
		t.Fatalf("network inspect's JSON does not hold the range as non_masquerade: %+v", networks)
	}
	e.host.MustRun(t, "nft", "delete", "element", "inet", "ctnet", "unmasqueraded", fmt.Sprintf(`{ 203.0.113.0/24 . "%s" }`, networks[0].Bridge))
	if r := e.ctnet("doctor"); r.Code == 0 || !strings.Contains(r.Stdout, "1 missing") {
		t.Errorf("doctor with the range's element gone: want it counted, got %s", r)
	}
	e.must("gc")
	if r := e.ctnet("doctor"); r.Code != 0 {
		t.Errorf("doctor after gc: %s", r)
	}
	if seen := askPeer(pod.Try, lab.WANIP, 7000); seen != podIP {
		t.Errorf("after gc the wan saw the pod as %q, want %s", seen, podIP)
	}

	if r := p.call("DEL", "pod", pod.Path, "eth0", conf); r.Code != 0 {
		t.Errorf("DEL: %s", r)
	}
	e.must("network", "rm", "pods")

	before := e.host.Snapshot(t, e.root)
	for _, c := range []struct{ name, run, want string }{
		{"CNI", "cni", `bad nonMasqueradeCIDRs \"10.244.0.0/33\": use IPv4 CIDRs`},
		{"CLI", "cli", `bad --opt non-masquerade "10.244.0.0/33": use IPv4 CIDRs`},
	} {
		var out string
		if c.run == "cni" {
			r := p.call("ADD", "pod", pod.Path, "eth0", strings.Replace(conf, "203.0.113.0/24", "10.244.0.0/33", 1))
			out = r.Stdout
		} else {
			r := e.ctnet("network", "create", "bad", "--opt", "non-masquerade=10.0.0.0/8,10.244.0.0/33")
			out = r.Stderr
			if strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 || r.Code == 0 {
				t.Errorf("CLI: want one line and a failure, got %s", r)
			}
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("%s with a bad range: want %q, got %q", c.name, c.want, out)
		}
	}
	if diff := before.Diff(e.host.Snapshot(t, e.root)); diff != "" || len(e.networks()) != 0 {
		t.Errorf("a refused range changed the host (networks %v):\n%s", e.networks(), diff)
	}
}
