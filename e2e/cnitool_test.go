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
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
)

// cnitool v1.3.1 runs a chain of ctnet and Debian's reference plugins, tuning (a
// sysctl in the pod) and bandwidth (shaping on the host veth ctnet's result names,
// and an ifb device for egress), with the capabilities from CAP_ARGS: each plugin
// takes the result before it, CHECK passes, traffic and the published port work,
// and DEL leaves nothing. The chain holds neither portmap (ctnet publishes ports
// itself, and Debian's portmap 1.1.1 fails CHECK on IPv4-only results, an upstream
// bug) nor firewall (ctnet's tables filter; its iptables chains outlive DEL by
// design, as other networks share them). libcni's cache (/var/lib/cni) is a private
// mount namespace's.
func TestCNIToolChain(t *testing.T) {
	e := newEnv(t)
	cnitool := lab.TestTool(t, "cnitool-v1.3.1")
	for _, plugin := range []string{"tuning", "bandwidth"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", plugin)); err != nil {
			lab.Missing(t, "needs Debian's containernetworking-plugins: %v", err)
		}
	}
	dir := t.TempDir()
	for _, d := range []string{"bin", "net.d"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(lab.CNIPlugin(t), filepath.Join(dir, "bin", "ctnet")); err != nil {
		t.Fatal(err)
	}
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "chain", "plugins": [
  {"type": "ctnet", "subnet": "10.92.0.0/24", "root": %q, "capabilities": {"portMappings": true}},
  {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
  {"type": "bandwidth", "capabilities": {"bandwidth": true}}]}`, e.root)
	if err := os.WriteFile(filepath.Join(dir, "net.d", "chain.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	const capArgs = `{"portMappings": [{"hostPort": 8085, "containerPort": 80, "protocol": "tcp"}],
		"bandwidth": {"ingressRate": 8000000, "ingressBurst": 1000000, "egressRate": 8000000, "egressBurst": 1000000}}`
	mounts := lab.NewPrivateMounts(t, "/var/lib")
	pod := lab.NewSandbox(t)
	mounts.Share(t, pod.Path)
	tool := func(command string) lab.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "nsenter", "--net="+e.host.Path, "--mount="+mounts.Path, cnitool, command, "chain", pod.Path)
		cmd.Env = append(os.Environ(), "NETCONFPATH="+filepath.Join(dir, "net.d"),
			"CNI_PATH="+filepath.Join(dir, "bin")+":/usr/lib/cni", "CAP_ARGS="+capArgs)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		r := lab.Result{}
		if err := cmd.Run(); err != nil {
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("cnitool %s: %v", command, err)
			}
			r.Code = exit.ExitCode()
		}
		r.Stdout, r.Stderr = stdout.String(), stderr.String()
		return r
	}

	r := tool("add")
	// DEL is idempotent: at cleanup it undoes what a failed check left.
	t.Cleanup(func() {
		if r := tool("del"); r.Code != 0 {
			t.Errorf("cnitool del at cleanup: %s", r)
		}
	})
	var res cniResult
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &res) != nil {
		t.Fatalf("cnitool add: %s", r)
	}
	// bandwidth adds its ifb device to ctnet's host veth and eth0.
	if len(res.IPs) != 1 || len(res.Interfaces) != 3 || res.Interfaces[1].Name != "eth0" || !strings.HasPrefix(res.Interfaces[2].Name, "bwp") {
		t.Fatalf("the chain's result does not describe ctnet's veth and eth0 and bandwidth's ifb: %+v", res)
	}
	if got := e.podAddrs(pod, "eth0"); !slices.Equal(got, []string{res.IPs[0].Address}) {
		t.Errorf("eth0 holds %v, the result says %s", got, res.IPs[0].Address)
	}
	hostVeth := res.Interfaces[0].Name
	if out, _ := pod.Try("sysctl", "-n", "net.ipv4.conf.eth0.arp_notify"); strings.TrimSpace(out) != "1" {
		t.Errorf("tuning did not set net.ipv4.conf.eth0.arp_notify in the pod: %q", out)
	}
	if out, _ := e.hostRun("tc", "qdisc", "show", "dev", hostVeth); !strings.Contains(out, "tbf") {
		t.Errorf("bandwidth put no tbf qdisc on the host veth %s:\n%s", hostVeth, out)
	}
	ifbs := func() []string {
		out, _ := e.hostRun("ip", "-o", "link", "show", "type", "ifb")
		return linesContaining(out, "bwp")
	}
	if len(ifbs()) != 1 {
		t.Errorf("bandwidth made no ifb device for egress: %v", ifbs())
	}
	if r := tool("check"); r.Code != 0 {
		t.Errorf("cnitool check: %s", r)
	}

	serveName(t, pod, 80, "pod")
	if !pingOK(pod.Try, lab.WANIP) {
		t.Errorf("the pod does not reach the wan through the chain's shaping")
	}
	if !eventually(func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, 8085) == "pod" }) {
		t.Errorf("the published port does not answer the wan")
	}

	if r := tool("del"); r.Code != 0 {
		t.Fatalf("cnitool del: %s", r)
	}
	if _, left := e.linksIn(lab.InNetNS(pod.Path))["eth0"]; left {
		t.Errorf("cnitool del left eth0 in the pod")
	}
	if left := ifbs(); len(left) != 0 {
		t.Errorf("cnitool del left ifb devices: %v", left)
	}
	if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) != 0 {
		t.Errorf("ctnet records left after cnitool del: %v", ids)
	}
	e.must("network", "rm", "chain")
}
