package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/fixhint"
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
	// morePaths are directories of CNI_PATH after ctnet's and /usr/lib/cni.
	morePaths []string
	args      string // CNI_ARGS
}

func (p cniPlugin) call(command, containerID, netnsPath, ifName, conf string) lab.Result {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := p.e.host.Command(ctx, p.path)
	// Debian's reference plugins after ctnet's: the IPAM plugins a configuration names.
	cniPath := strings.Join(append([]string{filepath.Dir(p.path), "/usr/lib/cni"}, p.morePaths...), ":")
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID="+containerID,
		"CNI_NETNS="+netnsPath, "CNI_IFNAME="+ifName, "CNI_PATH="+cniPath, "CNI_ARGS="+p.args)
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
	e.host.AwaitDyingVeths(t) // the links DEL retired
	if out, _ := podA.Try("ip", "-o", "link", "show"); strings.Count(out, "\n") != 1 || !strings.Contains(out, "lo:") {
		t.Errorf("after DEL the pod's namespace should hold only lo:\n%s", out)
	}
	if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) != 0 {
		t.Errorf("containers left after DEL: %v", ids)
	}

	otherRoot := lab.Root(t) // this host's tables are e.root's
	notARoot := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notARoot, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		command, conf, want string
	}{
		{"STATUS", podnet, ""},
		// A root whose state cannot be read: ADD cannot work, which STATUS says as the spec's error 50.
		{"STATUS", fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "podnet", "type": "ctnet", "root": %q}`, notARoot), `"code": 50`},
		{"VERSION", podnet, `"1.1.0"`},
		{"ADD", confOf("podnet", "10.88.0.0/33", ""), `"code"`},
		{"ADD", confOf("podnet", "10.99.0.0/24", ""), "exists with subnet 10.88.0.0/24"},
		// The real reason, not "it exists and cannot be found" (issue 12), in the
		// configuration's words, not the command line's (--subnet).
		{"ADD", confOf("uplinked", "203.0.113.0/24", ""), `bad subnet \"203.0.113.0/24\": it overlaps the host's`},
		{"ADD", fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "podnet", "type": "ctnet", "root": %q}`, otherRoot), "managed by the ctnet root " + e.root},
		{"ADD", `{"cniVersion": "1.1.0", "type": "ctnet"}`, "missing network name"},
	} {
		r := p.call(c.command, "pod-x", podA.Path, "eth0", c.conf)
		if wantOK := c.want == "" || c.command == "VERSION"; (r.Code == 0) != wantOK || !strings.Contains(r.Stdout, c.want) {
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

// netnsAdd makes a namespace with iproute2 that the test removes itself, as a
// runtime does; cleanup removes it if the test did not get that far.
func netnsAdd(t *testing.T) (name, path string) {
	t.Helper()
	name = lab.RandomName("ctl-rt-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			exec.Command("ip", "netns", "del", name).Run()
		}
	})
	return name, "/run/netns/" + name
}

// CHECK holds ADD's result against the kernel: the pod's interface with its address
// and MAC, its default route, and the host veth up as a port of the network's bridge.
// Each broken piece fails CHECK naming it, and CHECK passes again once it is
// repaired; with the veth deleted it fails too, and DEL still succeeds. The
// result's host interface carries its MAC, as iproute2 sees it.
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
	// The interfaces gone: deleting the pod's end of the veth takes the host's too.
	pod.MustRun(t, "ip", "link", "del", "eth0")
	e.host.AwaitDyingVeths(t)
	if _, left := e.linksIn(nil)[veth]; left {
		t.Fatalf("host interface %s outlived its peer", veth)
	}
	if r := check(); r.Code == 0 || !strings.Contains(r.Stdout, "interface eth0 is missing") {
		t.Errorf("CHECK with the veth deleted: want an error saying eth0 is missing, got %s", r)
	}
	if r := p.call("DEL", "pod-c", pod.Path, "eth0", conf); r.Code != 0 {
		t.Errorf("DEL: %s", r)
	}
	e.must("network", "rm", "checked")
}

// A runtime that never DELs (ctr 1.6 with detached containers) leaves a record that
// ctnet gc releases once the namespace is gone; an ADD with the same container ID
// then replaces that record instead of asking for a DEL, and with an IPAM plugin
// the stale address it held for the ID is given back rather than leaked.
func TestCNIAddReplacesReleasedRecord(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	dataDir := t.TempDir()
	for _, c := range []struct{ network, conf string }{
		{"reused", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "reused", "type": "ctnet", "subnet": "10.91.0.0/24", "root": %q}`, e.root)},
		{"reused-ipam", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "reused-ipam", "type": "ctnet", "root": %q,
			"ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.92.0.0/24"}]]}}`, e.root, dataDir)},
	} {
		name, path := netnsAdd(t)
		p.add("task-1", path, "eth0", c.conf)
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns del: %v: %s", err, out)
		}
		if gc := e.must("gc"); !strings.Contains(gc, "cni-task-1") {
			t.Errorf("%s: gc did not release cni-task-1:\n%s", c.network, gc)
		}
		pod := lab.NewSandbox(t)
		r := p.call("ADD", "task-1", pod.Path, "eth0", c.conf)
		var res cniResult
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &res) != nil || len(res.IPs) != 1 {
			t.Fatalf("%s: ADD of the released container's ID with a new namespace: %s", c.network, r)
		}
		if got := e.podAddrs(pod, "eth0"); !slices.Equal(got, []string{res.IPs[0].Address}) {
			t.Errorf("%s: the new namespace's eth0 holds %v, want the result's %s", c.network, got, res.IPs[0].Address)
		}
		if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) != 1 {
			t.Errorf("%s: want one container record, have %v", c.network, ids)
		}
		if leases := hostLocalLeases(t, dataDir, c.network); c.network == "reused-ipam" && len(leases) != 1 {
			t.Errorf("%s: want host-local to hold one address for task-1, it holds %v", c.network, leases)
		}
		if !pingOK(pod.Try, lab.WANIP) {
			t.Errorf("%s: the re-added pod cannot reach the wan", c.network)
		}
		if r := p.call("DEL", "task-1", pod.Path, "eth0", c.conf); r.Code != 0 {
			t.Errorf("%s: DEL: %s", c.network, r)
		}
		e.must("network", "rm", c.network)
	}
}

// hostLocalLeases reads host-local's store of a network: address → container ID.
func hostLocalLeases(t *testing.T, dataDir, networkName string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, networkName))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}
	}
	if err != nil {
		t.Fatal(err)
	}
	leases := map[string]string{}
	for _, f := range entries {
		if net.ParseIP(f.Name()) == nil {
			continue // its lock and last_reserved_ip files
		}
		b, err := os.ReadFile(filepath.Join(dataDir, networkName, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		id, _, _ := strings.Cut(string(b), "\n")
		leases[f.Name()] = strings.TrimSpace(id)
	}
	return leases
}

// With an "ipam" section ctnet delegates addresses to the IPAM plugin it names, as
// the reference bridge plugin does: Debian's host-local, with the node's pod CIDR in
// ranges (what containerd's {{.PodCIDR}} template writes) or in the ipRanges
// capability. The network is made around host-local's range, pods get host-local's
// addresses and reach each other and the wan, CHECK reaches host-local (which
// checks its reservation), DEL releases the address also when ctnet's part is
// already gone, and an ADD that fails after host-local gave an address (a result
// that does not fit, a network that differs) gives it back.
func TestCNIIPAMDelegation(t *testing.T) {
	e := newEnv(t)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	dataDir := t.TempDir()
	confOf := func(name, ipam, extra string) string {
		return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "ctnet", "root": %q, "ipam": %s%s}`, name, e.root, ipam, extra)
	}
	hostLocal := func(extra string) string {
		return fmt.Sprintf(`{"type": "host-local", "dataDir": %q%s}`, dataDir, extra)
	}
	podCIDR := confOf("k8s", hostLocal(`, "ranges": [[{"subnet": "10.244.1.0/24"}]]`), "")
	podA, podB := lab.NewSandbox(t), lab.NewSandbox(t)
	resA := p.add("pod-a", podA.Path, "eth0", podCIDR)
	resB := p.add("pod-b", podB.Path, "eth0", podCIDR)
	leases := hostLocalLeases(t, dataDir, "k8s")
	for _, pod := range []struct {
		id  string
		sb  *lab.Sandbox
		res cniResult
	}{{"pod-a", podA, resA}, {"pod-b", podB, resB}} {
		if len(pod.res.IPs) != 1 || pod.res.IPs[0].Gateway != "10.244.1.1" {
			t.Fatalf("ADD %s: want one address with host-local's gateway 10.244.1.1, got %+v", pod.id, pod.res.IPs)
		}
		addr := pod.res.IPs[0].Address
		ip, _, _ := strings.Cut(addr, "/")
		if leases[ip] != pod.id {
			t.Errorf("%s got %s, which host-local did not give it: host-local's leases are %v", pod.id, addr, leases)
		}
		if got := e.podAddrs(pod.sb, "eth0"); !slices.Equal(got, []string{addr}) || !strings.HasPrefix(addr, "10.244.1.") {
			t.Errorf("%s's eth0 holds %v, want host-local's %s in 10.244.1.0/24", pod.id, got, addr)
		}
	}
	var inspected []struct{ Subnet, Gateway string }
	e.decode(e.must("network", "inspect", "--format", "json", "k8s"), &inspected)
	if len(inspected) != 1 || inspected[0].Subnet != "10.244.1.0/24" || inspected[0].Gateway != "10.244.1.1" {
		t.Errorf("network k8s is %+v, want host-local's range 10.244.1.0/24 with gateway 10.244.1.1", inspected)
	}
	ipA, _, _ := strings.Cut(resA.IPs[0].Address, "/")
	if !pingOK(podB.Try, ipA) {
		t.Errorf("pod-b cannot reach pod-a at %s", ipA)
	}
	if !pingOK(podA.Try, lab.WANIP) {
		t.Errorf("pod-a cannot reach the wan")
	}

	// CHECK reaches host-local: without its reservation, CHECK fails.
	if r := p.call("CHECK", "pod-b", podB.Path, "eth0", withPrevResult(t, podCIDR, resB)); r.Code != 0 {
		t.Errorf("CHECK of pod-b: %s", r)
	}
	ipB, _, _ := strings.Cut(resB.IPs[0].Address, "/")
	reservation := filepath.Join(dataDir, "k8s", ipB)
	saved, err := os.ReadFile(reservation)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(reservation)
	if r := p.call("CHECK", "pod-b", podB.Path, "eth0", withPrevResult(t, podCIDR, resB)); r.Code == 0 {
		t.Errorf("CHECK of pod-b passed although host-local holds no reservation for it")
	}
	if err := os.WriteFile(reservation, saved, 0o644); err != nil {
		t.Fatal(err)
	}

	// The ipRanges capability: host-local reads the range from runtimeConfig itself.
	podC := lab.NewSandbox(t)
	ranged := confOf("k8s-ranged", hostLocal(""), `, "capabilities": {"ipRanges": true}, "runtimeConfig": {"ipRanges": [[{"subnet": "10.244.2.0/24"}]]}`)
	resC := p.add("pod-c", podC.Path, "eth0", ranged)
	if got := e.podAddrs(podC, "eth0"); len(resC.IPs) != 1 || !slices.Equal(got, []string{resC.IPs[0].Address}) || !strings.HasPrefix(resC.IPs[0].Address, "10.244.2.") {
		t.Errorf("with runtimeConfig.ipRanges 10.244.2.0/24 pod-c's eth0 holds %v, result %+v", got, resC.IPs)
	}

	// Refusals, each after host-local gave an address: it is given back.
	podX := lab.NewSandbox(t)
	for _, c := range []struct {
		name, network, conf, want string
		ipamRefusal               bool // ctnet's refusal of what the IPAM plugin gave, not the network's
	}{
		{"outside the subnet", "k8s-out", confOf("k8s-out", hostLocal(`, "ranges": [[{"subnet": "10.245.0.0/24"}]]`), `, "subnet": "10.244.0.0/16"`),
			"outside subnet 10.244.0.0/16", true},
		{"no IPv4 address", "k8s-v6", confOf("k8s-v6", hostLocal(`, "ranges": [[{"subnet": "fd00:244::/64"}]]`), ""), "no IPv4 address", true},
		{"the network differs", "k8s", confOf("k8s", hostLocal(`, "ranges": [[{"subnet": "10.244.3.0/24"}]]`), ""), "exists with subnet 10.244.1.0/24", false},
	} {
		r := p.call("ADD", "pod-x", podX.Path, "eth0", c.conf)
		var cniErr struct{ Msg string }
		if r.Code == 0 || json.Unmarshal([]byte(r.Stdout), &cniErr) != nil || !strings.Contains(cniErr.Msg, c.want) {
			t.Errorf("ADD with an IPAM result %s: want an error saying %q, got %s", c.name, c.want, r)
		} else if c.ipamRefusal {
			fixhint.Require(t, c.conf, errors.New(cniErr.Msg))
		}
		for ip, id := range hostLocalLeases(t, dataDir, c.network) {
			if id == "pod-x" {
				t.Errorf("ADD with an IPAM result %s left host-local's lease %s", c.name, ip)
			}
		}
	}
	if _, ok := e.linksIn(lab.InNetNS(podX.Path))["eth0"]; ok {
		t.Errorf("the refused ADDs left eth0 in the pod")
	}

	// DEL releases host-local's address, also when ctnet's part is already gone.
	e.must("rm", "cni-pod-b")
	for _, del := range []struct {
		id   string
		sb   *lab.Sandbox
		conf string
	}{{"pod-a", podA, podCIDR}, {"pod-b", podB, podCIDR}, {"pod-c", podC, ranged}} {
		if r := p.call("DEL", del.id, del.sb.Path, "eth0", del.conf); r.Code != 0 {
			t.Errorf("DEL %s: %s", del.id, r)
		}
	}
	for _, network := range []string{"k8s", "k8s-ranged"} {
		if left := hostLocalLeases(t, dataDir, network); len(left) != 0 {
			t.Errorf("after DEL host-local still holds %v on %s", left, network)
		}
	}
	if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) != 0 {
		t.Errorf("containers left after DEL: %v", ids)
	}
	e.must("network", "rm", "k8s", "k8s-ranged")
}

// GC and STATUS reach the IPAM plugin: GC so that it frees what it holds for
// attachments the runtime no longer lists, STATUS so that ADD's runtime learns when
// the plugin cannot give addresses. Both exist from spec 1.1.0, which Debian's
// host-local does not speak, so a stand-in records what it is asked.
func TestCNIIPAMGCAndStatus(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	calls, full := filepath.Join(dir, "calls"), filepath.Join(dir, "full")
	recorder := fmt.Sprintf(`#!/bin/sh
echo "$CNI_COMMAND" >> %s
if [ "$CNI_COMMAND" = STATUS ] && [ -e %s ]; then
	echo '{"cniVersion": "1.1.0", "code": 50, "msg": "no addresses left"}'
	exit 1
fi
`, calls, full)
	if err := os.WriteFile(filepath.Join(dir, "recorder"), []byte(recorder), 0o755); err != nil {
		t.Fatal(err)
	}
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t), morePaths: []string{dir}}
	conf := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "recorded", "type": "ctnet", "root": %q, "ipam": {"type": "recorder"}, "cni.dev/valid-attachments": []}`, e.root)
	if r := p.call("STATUS", "", "", "", conf); r.Code != 0 {
		t.Errorf("STATUS with an IPAM plugin that can give addresses: %s", r)
	}
	if err := os.WriteFile(full, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := p.call("STATUS", "", "", "", conf); r.Code == 0 || !strings.Contains(r.Stdout, "no addresses left") || !strings.Contains(r.Stdout, `"code": 50`) {
		t.Errorf("STATUS with an IPAM plugin that cannot give addresses: want its error 50, got %s", r)
	}
	if r := p.call("GC", "", "", "", conf); r.Code != 0 {
		t.Errorf("GC: %s", r)
	}
	b, err := os.ReadFile(calls)
	if got := strings.Fields(string(b)); err != nil || !slices.Equal(got, []string{"STATUS", "STATUS", "GC"}) {
		t.Errorf("the IPAM plugin was asked %v (%v), want STATUS, STATUS, GC", got, err)
	}
}
