package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// Underlay addresses of the two nodes.
const (
	node1IP = "198.51.100.1"
	node2IP = "198.51.100.2"
)

// Kubernetes across two nodes, as the kubelet drives CRI on each: two node namespaces
// joined by an underlay veth, each with its own containerd and CRI and its own pod
// CIDR given through README's configurations (ctnet's subnet on one, host-local's
// ranges on the other), with nonMasqueradeCIDRs the cluster's
// 10.244.0.0/16 and the routes "podCIDR via nodeIP" a route controller installs; node
// 1 is the wan's router for both. A pod on each node reaches the other's by its
// address, and each sees the other's real address (busybox httpd's CGI and its log);
// pods reach the wan as their node's address; hostPort answers from the wan on both
// nodes; and after rmp nothing of ctnet's is left on either.
func TestKubernetesTwoNodes(t *testing.T) {
	node1, node2 := newEnv(t), newNode(t)
	node1.host.MustRun(t, "ip", "link", "add", "under0", "type", "veth", "peer", "name", "under0", "netns", node2.host.Name)
	// Before the nodes' checks at cleanup: the routes through it go with it.
	t.Cleanup(func() { node1.host.MustRun(t, "ip", "link", "del", "under0") })
	for _, n := range []struct {
		node         *env
		addr, remote string
		podCIDR      string
	}{{node1, node1IP, node2IP, "10.244.2.0/24"}, {node2, node2IP, node1IP, "10.244.1.0/24"}} {
		n.node.host.MustRun(t, "ip", "addr", "add", n.addr+"/24", "dev", "under0")
		n.node.host.MustRun(t, "ip", "link", "set", "under0", "up")
		n.node.host.MustRun(t, "ip", "route", "add", n.podCIDR, "via", n.remote)
	}
	node2.host.MustRun(t, "ip", "route", "add", "default", "via", node1IP)
	node1.wan.MustRun(t, "ip", "route", "add", "198.51.100.0/24", "via", lab.HostUplinkIP)

	image := busyboxImageTar(t)
	// Node 1 runs README's node configuration, which names the pod CIDR with ctnet's
	// own key. Node 2 runs README's host-local one with its pod CIDR where
	// containerd's CNI template renders {{.PodCIDR}}, and host-local's leases in the
	// test's directory rather than the machine's /var/lib/cni.
	conf1 := readmeCNIConfig(t, "k8s-pod-network", node1.root)
	conf2 := readmeCNIConfig(t, "pods", node2.root)
	leases := t.TempDir()
	ipam := conf2["plugins"].([]any)[0].(map[string]any)["ipam"].(map[string]any)
	ipam["ranges"] = []any{[]any{map[string]any{"subnet": "10.244.2.0/24"}}}
	ipam["dataDir"] = leases
	cri1, cri2 := startContainerd(t, node1.host, marshal(t, conf1)), startContainerd(t, node2.host, marshal(t, conf2))
	cri1.importImage(image)
	cri2.importImage(image)
	podA, podB := cri1.runPod("a", 8080), cri2.runPod("b", 8080)
	inA := func(args ...string) (string, error) { return node1.host.Try(append(podA.netns(), args...)...) }
	inB := func(args ...string) (string, error) { return node2.host.Try(append(podB.netns(), args...)...) }
	for _, p := range []struct {
		name, ip, cidr string
		run            func(args ...string) (string, error)
	}{{"a", podA.ip, "10.244.1.", inA}, {"b", podB.ip, "10.244.2.", inB}} {
		if got := eth0Addr(t, p.run); got != p.ip || !strings.HasPrefix(p.ip, p.cidr) {
			t.Errorf("pod %s: CRI reports %s, iproute2 finds %s on eth0, want an address in %s0/24", p.name, p.ip, got, p.cidr)
		}
	}

	if _, err := os.Stat(filepath.Join(leases, "pods", podB.ip)); err != nil {
		t.Errorf("node 2: host-local holds no lease for pod b's %s: %v", podB.ip, err)
	}

	var seen string
	if !eventually(func() bool { seen = httpPeer(inA, podB.ip, 80); return seen != "" }) {
		t.Errorf("pod a on node 1 does not reach pod b on node 2 at %s", podB.ip)
	} else if seen != podA.ip {
		t.Errorf("pod b saw pod a as %s, want its own address %s", seen, podA.ip)
	}
	var log []byte
	if !eventually(func() bool {
		log, _ = os.ReadFile(cri2.containerLog(podB))
		return bytes.Contains(log, []byte(podA.ip+":"))
	}) {
		t.Errorf("pod b's server log does not name pod a's address %s:\n%s", podA.ip, log)
	}
	if !eventually(func() bool { seen = httpPeer(inB, podA.ip, 80); return seen != "" }) {
		t.Errorf("pod b on node 2 does not reach pod a on node 1 at %s", podA.ip)
	} else if seen != podB.ip {
		t.Errorf("pod a saw pod b as %s, want its own address %s", seen, podB.ip)
	}

	server := node1.wan.Command(t.Context(), peerServer(7000)...)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { server.Process.Kill(); server.Wait() }()
	for _, p := range []struct {
		name, node string
		run        func(args ...string) (string, error)
	}{{"a", lab.HostUplinkIP, inA}, {"b", node2IP, inB}} {
		if !eventually(func() bool { seen = askPeer(p.run, lab.WANIP, 7000); return seen != "" }) {
			t.Errorf("pod %s does not reach the wan", p.name)
		} else if seen != p.node {
			t.Errorf("the wan saw pod %s as %s, want its node's address %s", p.name, seen, p.node)
		}
	}
	for _, hostPort := range []struct{ name, node string }{{"a", lab.HostUplinkIP}, {"b", node2IP}} {
		if !eventually(func() bool { seen = httpPeer(node1.wanRun, hostPort.node, 8080); return seen != "" }) {
			t.Errorf("pod %s's hostPort 8080 on %s does not answer from the wan", hostPort.name, hostPort.node)
		} else if seen != lab.WANIP {
			t.Errorf("pod %s saw the wan's client as %s, want %s", hostPort.name, seen, lab.WANIP)
		}
	}

	cri1.removePod(podA)
	cri2.removePod(podB)
	for i, n := range []struct {
		node *env
		cri  *containerd
	}{{node1, cri1}, {node2, cri2}} {
		if left := n.cri.leftovers(); left != "" {
			t.Errorf("node %d: containerd holds after stopp and rmp:\n%s", i+1, left)
		}
		if left := ctnetLeftovers(t, n.node.host, n.node.root); left != "" {
			t.Errorf("node %d: ctnet holds after stopp and rmp:\n%s", i+1, left)
		}
	}
	node1.must("network", "rm", "k8s-pod-network")
	node2.must("network", "rm", "pods")
	if held, _ := filepath.Glob(filepath.Join(leases, "pods", "10.*")); len(held) > 0 {
		t.Errorf("node 2: host-local still holds %v after rmp", held)
	}
}
