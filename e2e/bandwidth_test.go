package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/fixhint"
	"github.com/ctnet/ctnet/internal/lab"
)

// Limits of TestBandwidthLimits: different in each direction, so that limits applied
// the wrong way round fail the test.
const (
	ingressLimit = 20e6 // bits per second into the container
	egressLimit  = 10e6 // out of it
)

// iperf3Server runs an iperf3 server in the wan until the test ends.
func iperf3Server(t *testing.T, e *env) {
	t.Helper()
	if _, err := exec.LookPath("iperf3"); err != nil {
		lab.Missing(t, "needs iperf3")
	}
	ctx, cancel := context.WithCancel(context.Background())
	server := e.wan.Command(ctx, "iperf3", "-s", "-B", lab.WANIP)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); server.Wait() })
	if !eventually(func() bool {
		_, err := e.wanRun("socat", "-T1", "/dev/null", "TCP:"+lab.WANIP+":5201,connect-timeout=1")
		return err == nil
	}) {
		t.Fatal("iperf3 server in the wan does not listen")
	}
}

// throughput measures TCP from the wan into the container (into) or out of it, in
// bits per second as the receiver counts them: three seconds after one left out for
// TCP's start.
func (e *env) throughput(name string, into bool) float64 {
	e.t.Helper()
	return throughputFrom(e.t, e.containerRun(name), into)
}

// throughputFrom is throughput from where run runs iperf3's client.
func throughputFrom(t *testing.T, run func(args ...string) (string, error), into bool) float64 {
	t.Helper()
	args := []string{"iperf3", "-c", lab.WANIP, "-t", "3", "-O", "1", "-J"}
	if into {
		args = append(args, "-R") // the server sends
	}
	var out string
	var err error
	var report struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	// The server serves one client at a time: it may still be ending the last one's
	// test, or be between tests, when iperf3 3.12 has closed its listening socket and
	// not opened the next. The client then says so in its JSON ("busy", "Connection
	// refused") and may exit 0.
	for range 10 {
		out, err = run(args...)
		report.Error = ""
		if err == nil && json.Unmarshal([]byte(out), &report) == nil && report.Error == "" {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil || report.End.SumReceived.BitsPerSecond == 0 {
		t.Fatalf("%s: no throughput in %q (%v)", strings.Join(args, " "), out, err)
	}
	return report.End.SumReceived.BitsPerSecond
}

// TestBandwidthLimits limits a container (run) and an attached namespace (attach)
// both ways and measures each with iperf3: within 20% of its limit, while an
// unlimited container on the same network goes faster than either. tc shows the host
// veth's and the ifb's token buckets, inspect the limits, and rm and gc leave no ifb
// behind.
func TestBandwidthLimits(t *testing.T) {
	e := newEnv(t)
	iperf3Server(t, e)
	e.runDetached("--name", "free", "--", "sleep", "600")
	e.runDetached("--name", "limited", "--ingress-rate", "20M", "--egress-rate", "10mbit", "--", "sleep", "600")
	pod := lab.NewSandbox(t)
	e.must("attach", "--netns", pod.Path, "--name", "pod", "--ingress-rate", "20mbit", "--egress-rate", "10M")
	for _, c := range []struct {
		into  bool
		limit float64
		what  string
	}{{true, ingressLimit, "ingress"}, {false, egressLimit, "egress"}} {
		free := e.throughput("free", c.into)
		limited := e.throughput("limited", c.into)
		attached := throughputFrom(t, pod.Try, c.into)
		t.Logf("%s: limited to %.0f bit/s: %.2f Mbit/s, attached %.2f Mbit/s; unlimited: %.2f Mbit/s", c.what, c.limit, limited/1e6, attached/1e6, free/1e6)
		if limited < 0.8*c.limit || limited > 1.2*c.limit {
			t.Errorf("%s of the limited container: %.2f Mbit/s, want %.0f Mbit/s ±20%%", c.what, limited/1e6, c.limit/1e6)
		}
		if attached < 0.8*c.limit || attached > 1.2*c.limit {
			t.Errorf("%s of the attached namespace: %.2f Mbit/s, want %.0f Mbit/s ±20%%", c.what, attached/1e6, c.limit/1e6)
		}
		if free < 2*c.limit {
			t.Errorf("%s of the unlimited container: %.2f Mbit/s, want more than twice the limit, %.0f Mbit/s", c.what, free/1e6, 2*c.limit/1e6)
		}
	}

	var limited struct {
		ID       string `json:"id"`
		Networks []struct {
			HostVeth  string `json:"host_veth"`
			IFB       string `json:"ifb"`
			Bandwidth struct {
				IngressRate uint64 `json:"ingress_rate"`
				EgressRate  uint64 `json:"egress_rate"`
			} `json:"bandwidth"`
		} `json:"networks"`
	}
	e.decodeInspected(e.must("inspect", "--format", "json", "limited"), &limited)
	att := limited.Networks[0]
	if att.Bandwidth.IngressRate != ingressLimit || att.Bandwidth.EgressRate != egressLimit || att.IFB == "" {
		t.Errorf("inspect shows the limits %+v on ifb %q, want %d and %d bit/s on an ifb", att.Bandwidth, att.IFB, int(ingressLimit), int(egressLimit))
	}
	if text := e.must("inspect", "limited"); !strings.Contains(text, "20mbit") || !strings.Contains(text, "10mbit") {
		t.Errorf("inspect's text does not show the limits:\n%s", text)
	}
	if out := e.output("tc", "qdisc", "show", "dev", att.HostVeth); !strings.Contains(out, "tbf") || !strings.Contains(out, "rate 20Mbit") || !strings.Contains(out, "ingress") {
		t.Errorf("tc on host veth %s: %s; want a 20Mbit tbf and an ingress qdisc", att.HostVeth, out)
	}
	if out := e.output("tc", "filter", "show", "dev", att.HostVeth, "ingress"); !strings.Contains(out, "Redirect to device "+att.IFB) {
		t.Errorf("tc filters on host veth %s's ingress: %s; want a redirect to %s", att.HostVeth, out, att.IFB)
	}
	if out := e.output("tc", "qdisc", "show", "dev", att.IFB); !strings.Contains(out, "rate 10Mbit") {
		t.Errorf("tc on ifb %s: %s; want a 10Mbit tbf", att.IFB, out)
	}
	if out := e.output("ip", "-d", "link", "show", att.IFB); !strings.Contains(out, "alias ctnet:container:"+limited.ID) {
		t.Errorf("ifb %s is not tagged as the container's: %s", att.IFB, out)
	}
	free := e.inspect("free").Networks[0].HostVeth
	if out := e.output("tc", "qdisc", "show", "dev", free); strings.Contains(out, "tbf") || strings.Contains(out, "ingress") {
		t.Errorf("the unlimited container's veth %s is shaped: %s", free, out)
	}

	// Shaping taken away behind ctnet's back is made again by gc, and shaping intact
	// is left alone.
	if report := e.gc(); len(report) > 0 {
		t.Errorf("gc with the limits in place: %v, want nothing to do", report)
	}
	e.host.MustRun(t, "tc", "qdisc", "del", "dev", att.HostVeth, "root")
	if report := strings.Join(e.gc(), "\n"); !strings.Contains(report, "reconnected container limited") {
		t.Errorf("gc after the veth's token bucket was deleted does not reconnect the container:\n%s", report)
	}
	att.HostVeth = e.inspect("limited").Networks[0].HostVeth
	if out := e.output("tc", "qdisc", "show", "dev", att.HostVeth); !strings.Contains(out, "rate 20Mbit") {
		t.Errorf("after gc, tc on host veth %s: %s; want the 20Mbit tbf back", att.HostVeth, out)
	}
	e.host.MustRun(t, "tc", "filter", "del", "dev", att.HostVeth, "ingress")
	if report := strings.Join(e.gc(), "\n"); !strings.Contains(report, "reconnected container limited") {
		t.Errorf("gc after the redirect to the ifb was deleted does not reconnect the container:\n%s", report)
	}

	e.must("rm", "-f", "limited")
	checkIFBRetired(t, e, att.IFB, "rm")
	podIFB := e.inspectIFB("pod")
	e.must("rm", "pod")
	checkIFBRetired(t, e, podIFB, "rm of an attached namespace")

	// A killed container's ifb, in the host's namespace, does not go with its own: gc
	// removes it.
	e.runDetached("--name", "killed", "--egress-rate", "10M", "--", "sleep", "600")
	ifb := e.inspectIFB("killed")
	e.killContainer("killed")
	if report := strings.Join(e.gc(), "\n"); !strings.Contains(report, "removed interface "+ifb) {
		t.Errorf("gc after the container was killed does not report removing %s:\n%s", ifb, report)
	}
	if out, err := e.hostRun("ip", "link", "show", ifb); err == nil {
		t.Errorf("ifb %s is left after gc: %s", ifb, out)
	}
	e.must("rm", "-f", "killed", "free")
	e.must("network", "rm", "bridge")
}

func (e *env) inspectIFB(name string) string {
	e.t.Helper()
	var c struct {
		Networks []struct {
			IFB string `json:"ifb"`
		} `json:"networks"`
	}
	e.decodeInspected(e.must("inspect", "--format", "json", name), &c)
	if len(c.Networks) == 0 || c.Networks[0].IFB == "" {
		e.t.Fatalf("container %s has no ifb", name)
	}
	return c.Networks[0].IFB
}

// TestBandwidthBadInput refuses rates that do not parse, or do not apply, in one line
// naming the flag, changing nothing; the same rate, well written, is taken.
func TestBandwidthBadInput(t *testing.T) {
	e := newEnv(t)
	ns := lab.NewSandbox(t)
	e.must("network", "create", "web", "--subnet", "10.77.0.0/24")
	before := e.host.Snapshot(t, e.root)
	storeBefore := e.must("ps", "-a", "--format", "json") + e.must("network", "ls", "--format", "json")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--ingress-rate", "10MB", "--", "true"}, "bad --ingress-rate \"10MB\": use bits per second"},
		{[]string{"run", "--egress-rate", "fast", "--", "true"}, "bad --egress-rate \"fast\""},
		{[]string{"run", "--egress-rate", "10m", "--", "true"}, "milli"},
		{[]string{"run", "--ingress-rate", "0", "--", "true"}, "from 1k to 100G"},
		{[]string{"run", "--ingress-rate", "200G", "--", "true"}, "from 1k to 100G"},
		{[]string{"run", "--network", "none", "--ingress-rate", "10M", "--", "true"}, "no effect with --network none"},
		{[]string{"run", "--network", "host", "--egress-rate", "10M", "--", "true"}, "no effect with --network host"},
		{[]string{"attach", "--netns", ns.Path, "--name", "x", "--network", "web", "--egress-rate", "10kbps"}, "bad --egress-rate"},
	} {
		r := e.ctnet(c.args...)
		msg := strings.TrimSpace(r.Stderr)
		if r.Code == 0 {
			t.Errorf("%v: accepted", c.args)
			continue
		}
		if !strings.Contains(msg, c.want) {
			t.Errorf("%v: %q does not say %q", c.args, msg, c.want)
		}
		fixhint.Require(t, c.args, fmt.Errorf("%s", msg))
	}
	if diff := before.Diff(e.host.Snapshot(t, e.root)); diff != "" {
		t.Errorf("refused input changed the kernel:\n%s", diff)
	}
	if after := e.must("ps", "-a", "--format", "json") + e.must("network", "ls", "--format", "json"); after != storeBefore {
		t.Errorf("refused input changed the store:\n%s\n%s", storeBefore, after)
	}
	// The positive control: the same flags, well written, are taken.
	e.must("attach", "--netns", ns.Path, "--name", "x", "--network", "web", "--egress-rate", "10kbit")
	if ifb := e.inspectIFB("x"); ifb == "" {
		t.Error("a well-written rate made no ifb")
	}
	e.must("rm", "x")
	e.must("network", "rm", "web")
}

// TestCNIBandwidth gives a pod the limits of CNI's bandwidth capability, as
// Kubernetes' bandwidth annotations arrive: iperf3 measures them, tc shows them, a
// burst without a rate is refused as the spec's error naming the key, and DEL leaves
// no ifb behind.
func TestCNIBandwidth(t *testing.T) {
	e := newEnv(t)
	iperf3Server(t, e)
	p := cniPlugin{t: t, e: e, path: lab.CNIPlugin(t)}
	conf := func(limits string) string {
		return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "podnet", "type": "ctnet", "subnet": "10.88.0.0/24", "root": %q,
			"capabilities": {"bandwidth": true}, "runtimeConfig": {"bandwidth": %s}}`, e.root, limits)
	}
	pod := lab.NewSandbox(t)
	bad := p.call("ADD", "pod-bad", pod.Path, "eth0", conf(`{"egressBurst": 1000000}`))
	var cniErr struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if bad.Code == 0 || json.Unmarshal([]byte(bad.Stdout), &cniErr) != nil || cniErr.Code != 7 ||
		!strings.Contains(cniErr.Msg, "runtimeConfig.bandwidth.egressBurst") {
		t.Errorf("ADD with a burst and no rate: %s; want error 7 naming runtimeConfig.bandwidth.egressBurst", bad)
	}
	if out, _ := pod.Try("ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("a refused ADD left eth0 in the pod: %s", out)
	}

	p.add("pod-a", pod.Path, "eth0", conf(`{"ingressRate": 20000000, "ingressBurst": 400000, "egressRate": 10000000, "egressBurst": 200000}`))
	for _, c := range []struct {
		into  bool
		limit float64
		what  string
	}{{true, ingressLimit, "ingress"}, {false, egressLimit, "egress"}} {
		got := throughputFrom(t, pod.Try, c.into)
		t.Logf("pod's %s, limited to %.0f bit/s: %.2f Mbit/s", c.what, c.limit, got/1e6)
		if got < 0.8*c.limit || got > 1.2*c.limit {
			t.Errorf("pod's %s: %.2f Mbit/s, want %.0f Mbit/s ±20%%", c.what, got/1e6, c.limit/1e6)
		}
	}
	var c struct {
		Networks []struct {
			HostVeth string `json:"host_veth"`
			IFB      string `json:"ifb"`
		} `json:"networks"`
	}
	e.decodeInspected(e.must("inspect", "--format", "json", "cni-pod-a"), &c)
	veth, ifb := c.Networks[0].HostVeth, c.Networks[0].IFB
	if out := e.output("tc", "qdisc", "show", "dev", veth); !strings.Contains(out, "rate 20Mbit burst 50000b") {
		t.Errorf("tc on host veth %s: %s; want a 20Mbit tbf with the 400000-bit burst", veth, out)
	}
	if out := e.output("tc", "qdisc", "show", "dev", ifb); !strings.Contains(out, "rate 10Mbit burst 25000b") {
		t.Errorf("tc on ifb %s: %s; want a 10Mbit tbf with the 200000-bit burst", ifb, out)
	}
	if r := p.call("DEL", "pod-a", pod.Path, "eth0", conf(`{}`)); r.Code != 0 {
		t.Fatalf("DEL: %s", r)
	}
	checkIFBRetired(t, e, ifb, "DEL")
	e.must("network", "rm", "podnet")
}

// checkIFBRetired checks that a removal (what) left a container's ifb down at
// once, and gone once the deletion it handed on is done.
func checkIFBRetired(t *testing.T, e *env, ifb, what string) {
	t.Helper()
	if out, err := e.hostRun("ip", "-o", "link", "show", ifb); err == nil && strings.Contains(out, ",UP") {
		t.Errorf("ifb %s is still up after %s: %s", ifb, what, out)
	}
	e.host.AwaitDyingVeths(t)
	if out, err := e.hostRun("ip", "link", "show", ifb); err == nil {
		t.Errorf("ifb %s is left after %s: %s", ifb, what, out)
	}
}
