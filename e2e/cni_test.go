package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
)

// cniResult is the part of an ADD result the tests read.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name    string `json:"name"`
		MAC     string `json:"mac"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Address   string `json:"address"`
		Gateway   string `json:"gateway"`
		Interface *int   `json:"interface"`
	} `json:"ips"`
	Routes []struct {
		Dst string `json:"dst"`
		GW  string `json:"gw"`
	} `json:"routes"`
}

// cniPlugin runs ctnet-cni in the sandbox's host namespace as a runtime does: the
// CNI_ variables and the network configuration on stdin.
type cniPlugin struct {
	t    *testing.T
	e    *env
	path string
}

func (p cniPlugin) call(command, containerID, netnsPath, ifName, conf string) lab.Result {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := p.e.host.Command(ctx, p.path)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID="+containerID,
		"CNI_NETNS="+netnsPath, "CNI_IFNAME="+ifName, "CNI_PATH="+filepath.Dir(p.path))
	cmd.Stdin = strings.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	r := lab.Result{}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			p.t.Fatalf("run %s: %v", p.path, err)
		}
		r.Code = exit.ExitCode()
	}
	r.Stdout, r.Stderr = stdout.String(), stderr.String()
	return r
}

func (p cniPlugin) add(containerID, netnsPath, ifName, conf string) cniResult {
	p.t.Helper()
	r := p.call("ADD", containerID, netnsPath, ifName, conf)
	var res cniResult
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &res) != nil {
		p.t.Fatalf("ADD %s %s: %s", containerID, ifName, r)
	}
	return res
}

// podAddrs reads the IPv4 addresses of a pod's interface with iproute2.
func (e *env) podAddrs(pod *lab.Sandbox, ifname string) []string {
	e.t.Helper()
	return e.linksIn(lab.InNetNS(pod.Path))[ifname].ipv4()
}

// withPrevResult is conf with a CHECK's prevResult.
func withPrevResult(t *testing.T, conf string, prev cniResult) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(conf), &m); err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = prev
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ctnet-cni, driven as containerd drives a plugin, attaches namespaces a runtime made
// to a ctnet network: the result describes what iproute2 then finds (an address the
// ips capability names, too), pods reach each other, the wan and their published
// port, `ctnet ps` lists them, a second network gives a named interface without a
// second default route, CHECK finds what is broken, GC releases what the runtime no
// longer lists, DEL is idempotent and works after the namespace is gone, errors come
// as the spec's JSON, and nothing is left.
func TestCNIPlugin(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	confOf := func(name, subnet, extra string) string {
		return fmt.Sprintf(`{"cniVersion": "1.1.0", "name": %q, "type": "ctnet", "subnet": %q, "root": %q%s}`, name, subnet, e.root, extra)
	}
	podnet := confOf("podnet", "10.88.0.0/24", "")
	published := confOf("podnet", "10.88.0.0/24",
		`, "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}`)
	second := confOf("podnet2", "10.89.0.0/24", "")
	podA, podB := lab.NewSandbox(t), lab.NewSandbox(t)

	resA := p.add("pod-a", podA.Path, "eth0", published)
	resB := p.add("pod-b", podB.Path, "eth0", confOf("podnet", "10.88.0.0/24", `, "capabilities": {"ips": true}, "runtimeConfig": {"ips": ["10.88.0.50/24"]}`))
	// The kernel, not the result (which echoes the request), says what the pod got.
	if got := e.podAddrs(podB, "eth0"); !slices.Equal(got, []string{"10.88.0.50/24"}) {
		t.Errorf("ADD with the ips capability: pod-b's eth0 holds %v, want 10.88.0.50/24", got)
	}
	if len(resB.IPs) != 1 || resB.IPs[0].Address != "10.88.0.50/24" {
		t.Errorf("ADD with the ips capability: the result says %+v, want 10.88.0.50/24", resB.IPs)
	}
	if len(resA.IPs) != 1 || len(resA.Interfaces) != 2 || resA.IPs[0].Interface == nil || *resA.IPs[0].Interface != 1 ||
		resA.Interfaces[1].Name != "eth0" || resA.Interfaces[1].Sandbox != podA.Path ||
		resA.IPs[0].Gateway != "10.88.0.1" || len(resA.Routes) != 1 || resA.Routes[0].Dst != "0.0.0.0/0" {
		t.Fatalf("ADD result does not describe eth0 with its address and default route: %+v", resA)
	}
	if got := e.podAddrs(podA, "eth0"); !slices.Equal(got, []string{resA.IPs[0].Address}) {
		t.Errorf("eth0 in pod-a holds %v, want the result's address %s", got, resA.IPs[0].Address)
	}
	if resA.IPs[0].Address == "10.88.0.50/24" {
		t.Errorf("both pods hold 10.88.0.50/24")
	}
	ipA := strings.Split(resA.IPs[0].Address, "/")[0]
	if out, _ := podA.Try("ip", "link", "show", "eth0"); !strings.Contains(out, resA.Interfaces[1].MAC) {
		t.Errorf("eth0 in the pod lacks the result's MAC %s:\n%s", resA.Interfaces[1].MAC, out)
	}
	if out, _ := podA.Try("ip", "route", "show", "default"); !strings.Contains(out, "via 10.88.0.1 dev eth0") {
		t.Errorf("the pod's default route is not the result's:\n%s", out)
	}
	if repeat := p.add("pod-a", podA.Path, "eth0", published); repeat.IPs[0].Address != resA.IPs[0].Address {
		t.Errorf("a repeated ADD changed the address: %s, then %s", resA.IPs[0].Address, repeat.IPs[0].Address)
	}
	if got := e.podAddrs(podA, "eth0"); !slices.Equal(got, []string{resA.IPs[0].Address}) {
		t.Errorf("after a repeated ADD eth0 in pod-a holds %v, want %s", got, resA.IPs[0].Address)
	}

	server := podA.Command(t.Context(), peerServer(80)...)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { server.Process.Kill(); server.Wait() }()
	if !pingOK(podB.Try, ipA) {
		t.Errorf("pod-b cannot reach pod-a at %s", ipA)
	}
	if !pingOK(podA.Try, lab.WANIP) {
		t.Errorf("pod-a cannot reach the wan")
	}
	var seen string
	if !eventually(func() bool { seen = askPeer(e.wanRun, lab.HostUplinkIP, 8080); return seen != "" }) {
		t.Errorf("pod-a's published port 8080 does not answer from the wan")
	} else if seen != lab.WANIP {
		t.Errorf("pod-a's server saw the wan client as %s, want %s", seen, lab.WANIP)
	}
	ps := e.must("ps")
	for _, want := range []string{"cni-pod-a", "cni-pod-b", "0.0.0.0:8080->80/tcp"} {
		if !strings.Contains(ps, want) {
			t.Errorf("ctnet ps does not show %s:\n%s", want, ps)
		}
	}

	// A second network: the interface the runtime names, no second default route.
	res2 := p.add("pod-a", podA.Path, "net1", second)
	if out, _ := podA.Try("ip", "-4", "-o", "addr", "show", "net1"); !strings.Contains(out, res2.IPs[0].Address) || len(res2.Routes) != 0 {
		t.Errorf("net1 of the second network: result %+v, pod has:\n%s", res2, out)
	}
	if out, _ := podA.Try("ip", "route", "show", "default"); strings.Count(out, "default") != 1 {
		t.Errorf("the pod should keep one default route, has:\n%s", out)
	}

	// CHECK: what ADD made holds; a broken attachment and an unknown one are reported.
	if r := p.call("CHECK", "pod-a", podA.Path, "eth0", withPrevResult(t, published, resA)); r.Code != 0 {
		t.Errorf("CHECK of a good attachment: %s", r)
	}
	podB.MustRun(t, "ip", "addr", "flush", "dev", "eth0")
	if r := p.call("CHECK", "pod-b", podB.Path, "eth0", withPrevResult(t, podnet, resB)); r.Code == 0 || !strings.Contains(r.Stdout, "lacks its address") {
		t.Errorf("CHECK of an interface without its address: want an error saying so, got %s", r)
	}
	if r := p.call("CHECK", "pod-z", podB.Path, "eth0", withPrevResult(t, podnet, resB)); r.Code == 0 || !strings.Contains(r.Stdout, "no interface eth0 on network podnet") {
		t.Errorf("CHECK of an unknown container: want an error, got %s", r)
	}

	// GC: the runtime lists only pod-a as valid on podnet.
	gc := confOf("podnet", "10.88.0.0/24", `, "cni.dev/valid-attachments": [{"containerID": "pod-a", "ifname": "eth0"}]`)
	if r := p.call("GC", "", "", "", gc); r.Code != 0 {
		t.Errorf("GC: %s", r)
	}
	if ps := e.must("ps"); strings.Contains(ps, "cni-pod-b") || !strings.Contains(ps, "cni-pod-a") {
		t.Errorf("after GC listing only pod-a, ctnet ps shows:\n%s", ps)
	}
	if _, left := e.linksIn(lab.InNetNS(podB.Path))["eth0"]; left {
		t.Errorf("GC left pod-b's eth0")
	}
	if got := e.podAddrs(podA, "eth0"); !slices.Equal(got, []string{resA.IPs[0].Address}) {
		t.Errorf("after GC, which lists pod-a, its eth0 holds %v, want %s", got, resA.IPs[0].Address)
	}
	if r := p.call("DEL", "pod-b", podB.Path, "eth0", podnet); r.Code != 0 {
		t.Errorf("DEL of what GC released: want success, got %s", r)
	}

	// DEL after the runtime removed the namespace.
	podC := lab.RandomName("ctl-gone-")
	if out, err := exec.Command("ip", "netns", "add", podC).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	p.add("pod-c", "/run/netns/"+podC, "eth0", podnet)
	if out, err := exec.Command("ip", "netns", "del", podC).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	if r := p.call("DEL", "pod-c", "", "eth0", podnet); r.Code != 0 {
		t.Errorf("DEL after the namespace is gone: %s", r)
	}

	// DEL: the second network first, then the first; then again.
	for _, del := range []struct{ ifName, conf string }{{"net1", second}, {"eth0", podnet}, {"eth0", podnet}} {
		if r := p.call("DEL", "pod-a", podA.Path, del.ifName, del.conf); r.Code != 0 {
			t.Errorf("DEL pod-a %s: %s", del.ifName, r)
		}
	}
	if out, _ := podA.Try("ip", "-o", "link", "show"); strings.Count(out, "\n") != 1 || !strings.Contains(out, "lo:") {
		t.Errorf("after DEL the pod's namespace should hold only lo:\n%s", out)
	}
	if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) != 0 {
		t.Errorf("containers left after DEL: %v", ids)
	}

	for _, c := range []struct {
		command, conf, want string
	}{
		{"STATUS", podnet, ""},
		{"VERSION", podnet, `"1.1.0"`},
		{"ADD", confOf("podnet", "10.88.0.0/33", ""), `"code"`},
		{"ADD", confOf("podnet", "10.99.0.0/24", ""), "exists with subnet 10.88.0.0/24"},
		// The real reason, not "it exists and cannot be found" (issue 12).
		{"ADD", confOf("uplinked", "203.0.113.0/24", ""), "overlaps the host's"},
		{"ADD", `{"cniVersion": "1.1.0", "type": "ctnet"}`, "missing network name"},
	} {
		r := p.call(c.command, "pod-x", podA.Path, "eth0", c.conf)
		if wantOK := c.command == "STATUS" || c.command == "VERSION"; (r.Code == 0) != wantOK || !strings.Contains(r.Stdout, c.want) {
			t.Errorf("%s with %s: want exit 0 = %v and %q in the output, got %s", c.command, c.conf, wantOK, c.want, r)
		}
	}
	e.must("network", "rm", "podnet", "podnet2")
}

// Pods a runtime starts at once all get their network: the first ADDs race to create
// it (all but one find it made and use it), and every pod gets its own address.
func TestCNIConcurrentAdd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	conf := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "burst", "type": "ctnet", "root": %q}`, e.root)
	const pods = 8
	sandboxes := make([]*lab.Sandbox, pods)
	for i := range sandboxes {
		sandboxes[i] = lab.NewSandbox(t)
	}
	results := make([]lab.Result, pods)
	var wg sync.WaitGroup
	for i, sb := range sandboxes {
		wg.Go(func() { results[i] = p.call("ADD", fmt.Sprintf("pod-%d", i), sb.Path, "eth0", conf) })
	}
	wg.Wait()
	addrs := map[string]int{}
	for i, r := range results {
		var res cniResult
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &res) != nil || len(res.IPs) != 1 {
			t.Errorf("ADD pod-%d: %s", i, r)
			continue
		}
		held := e.podAddrs(sandboxes[i], "eth0")
		if !slices.Equal(held, []string{res.IPs[0].Address}) {
			t.Errorf("pod-%d's eth0 holds %v, want the result's %s", i, held, res.IPs[0].Address)
			continue
		}
		if other, dup := addrs[held[0]]; dup {
			t.Errorf("pods %d and %d both hold %s", other, i, held[0])
		}
		addrs[held[0]] = i
	}
	if nets := e.networks(); len(nets) != 1 || nets[0] != "burst" {
		t.Errorf("want the one network burst, have %v", nets)
	}
	for i, sb := range sandboxes {
		wg.Go(func() {
			if r := p.call("DEL", fmt.Sprintf("pod-%d", i), sb.Path, "eth0", conf); r.Code != 0 {
				t.Errorf("DEL pod-%d: %s", i, r)
			}
		})
	}
	wg.Wait()
	e.must("network", "rm", "burst")
}

// CHECK holds ADD's result against the kernel: the pod's interface with its address
// and MAC, its default route, and the host veth up as a port of the network's bridge.
// Each broken piece fails CHECK naming it, and CHECK passes again once it is
// repaired. The result's host interface carries its MAC, as iproute2 sees it.
func TestCNICheckVerifiesResult(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "checked", "type": "ctnet", "subnet": "10.90.0.0/24", "root": %q}`, e.root)
	pod := lab.NewSandbox(t)
	res := p.add("pod-c", pod.Path, "eth0", conf)
	if len(res.Interfaces) != 2 || res.Interfaces[0].Sandbox != "" {
		t.Fatalf("ADD result lacks the host interface: %+v", res)
	}
	veth := res.Interfaces[0].Name
	hostSide := e.linksIn(nil)[veth]
	if res.Interfaces[0].MAC == "" || res.Interfaces[0].MAC != hostSide.Address {
		t.Errorf("the result gives host interface %s the MAC %q, iproute2 sees %q", veth, res.Interfaces[0].MAC, hostSide.Address)
	}
	bridge := hostSide.Master
	if bridge == "" {
		t.Fatalf("host interface %s is in no bridge: %+v", veth, hostSide)
	}
	check := func() lab.Result { return p.call("CHECK", "pod-c", pod.Path, "eth0", withPrevResult(t, conf, res)) }
	if r := check(); r.Code != 0 {
		t.Fatalf("CHECK of an intact attachment: %s", r)
	}
	for _, c := range []struct {
		name          string
		breakIt, fix  []string
		inPod         bool
		wantInMessage string
	}{
		{"default route deleted", []string{"ip", "route", "del", "default"},
			[]string{"ip", "route", "add", "default", "via", "10.90.0.1", "dev", "eth0"}, true, "default route"},
		{"veth out of the bridge", []string{"ip", "link", "set", veth, "nomaster"},
			[]string{"ip", "link", "set", veth, "master", bridge}, false, "not a port of bridge " + bridge},
		{"veth down", []string{"ip", "link", "set", veth, "down"}, []string{"ip", "link", "set", veth, "up"}, false, "is down"},
		{"MAC changed", []string{"ip", "link", "set", "eth0", "address", "02:00:00:00:00:99"},
			[]string{"ip", "link", "set", "eth0", "address", res.Interfaces[1].MAC}, true, res.Interfaces[1].MAC},
	} {
		run := e.host.MustRun
		if c.inPod {
			run = pod.MustRun
		}
		run(t, c.breakIt...)
		if r := check(); r.Code == 0 || !strings.Contains(r.Stdout, c.wantInMessage) {
			t.Errorf("CHECK with the %s: want an error saying %q, got %s", c.name, c.wantInMessage, r)
		}
		run(t, c.fix...)
		if r := check(); r.Code != 0 {
			t.Errorf("CHECK after repairing the %s: %s", c.name, r)
		}
	}
	if r := p.call("DEL", "pod-c", pod.Path, "eth0", conf); r.Code != 0 {
		t.Errorf("DEL: %s", r)
	}
	e.must("network", "rm", "checked")
}
