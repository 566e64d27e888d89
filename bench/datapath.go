package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/ctnet/ctnet/network"
)

// pathResult is one data path: TCP throughput of one iperf3 stream and the round
// trip of a 1-byte ping-pong.
type pathResult struct {
	Path string `json:"path"`
	Tool string `json:"tool"`
	// Gbps is the median over repetitions, Runs the repetitions themselves.
	Gbps  value   `json:"gbps"`
	Runs  []value `json:"gbps_runs"`
	RTTus value   `json:"rtt_p50_us"`
	// Reference is the path the ratios compare with, measured with RefTool (the
	// same tool when empty).
	Reference string `json:"reference,omitempty"`
	RefTool   string `json:"reference_tool,omitempty"`
	GbpsRatio value  `json:"gbps_ratio,omitempty"`
	RTTRatio  value  `json:"rtt_ratio,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Ports of the servers every data-path target runs.
const (
	iperfPort    = 5201
	pingPongPort = 7000
)

// iperf3Gbps runs one iperf3 client inside t (through prefix, for user namespaces)
// and returns the received throughput.
func iperf3Gbps(ctx context.Context, t *nsThread, prefix []string, host string, port, seconds int, extra ...string) (float64, error) {
	argv := commandLine(prefix, "iperf3", "-c", host, "-p", strconv.Itoa(port),
		"-t", strconv.Itoa(seconds), "-J", "--connect-timeout", "5000")
	if seconds > 1 {
		argv = append(argv, "-O", "1") // the first second (slow start) is left out
	}
	out, err := t.run(ctx, nil, nil, append(argv, extra...)...)
	var report struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &report); jerr == nil && report.Error != "" {
		return math.NaN(), errors.New("iperf3: " + report.Error)
	}
	if err != nil {
		return math.NaN(), err
	}
	return report.End.SumReceived.BitsPerSecond / 1e9, nil
}

// pathProbe says how to reach one target from one namespace.
type pathProbe struct {
	path, tool string
	from       *nsThread
	prefix     []string // runs the clients in a user namespace
	host       string
	iperf      int // iperf3 server port as seen from `from`
	pingPong   int // ping-pong server port as seen from `from`
	reference  string
	refTool    string
	reverse    bool // iperf3 -R: the server sends
}

// measurePaths runs every probe's iperf3 and ping-pong reps times (repetitions
// outermost, so that noise hits all paths alike), keeps the medians and fills in
// the ratios.
func measurePaths(ctx context.Context, env *benchEnv, probes []pathProbe) []pathResult {
	out := make([]pathResult, len(probes))
	rtts := make([][]float64, len(probes))
	for k, p := range probes {
		out[k] = pathResult{Path: p.path, Tool: p.tool, Reference: p.reference, RefTool: p.refTool}
	}
	fail := func(k int, err error) {
		if out[k].Error == "" {
			out[k].Error = err.Error()
		}
	}
	for range env.cfg.Repetitions {
		for k, p := range probes {
			var extra []string
			if p.reverse {
				extra = []string{"-R"}
			}
			g, err := iperf3Gbps(ctx, p.from, p.prefix, p.host, p.iperf, env.cfg.IperfSeconds, extra...)
			if err != nil {
				fail(k, err)
			}
			out[k].Runs = append(out[k].Runs, value(g))
			if p.pingPong == 0 {
				continue
			}
			r, err := runPingPongClient(ctx, p.from, env.self, p.prefix, net.JoinHostPort(p.host, strconv.Itoa(p.pingPong)), env.cfg.Rounds)
			if err != nil {
				fail(k, fmt.Errorf("ping-pong: %w", err))
				continue
			}
			rtts[k] = append(rtts[k], r.P50us)
		}
	}
	for k := range probes {
		var runs []float64
		for _, g := range out[k].Runs {
			runs = append(runs, float64(g))
		}
		out[k].Gbps, out[k].RTTus = value(median(runs)), value(median(rtts[k]))
	}
	for k := range out {
		refTool := out[k].RefTool
		if refTool == "" {
			refTool = out[k].Tool
		}
		for _, ref := range out {
			if ref.Path == out[k].Reference && ref.Tool == refTool {
				out[k].GbpsRatio = out[k].Gbps / ref.Gbps
				out[k].RTTRatio = out[k].RTTus / ref.RTTus
			}
		}
		logPath(out[k])
	}
	return out
}

func logPath(r pathResult) {
	fmt.Fprintf(os.Stderr, "   %-14s %-42s %7.2f Gbit/s  rtt %7.1f µs", r.Tool, r.Path, r.Gbps, r.RTTus)
	if r.Reference != "" {
		fmt.Fprintf(os.Stderr, "  ×%.2f / ×%.2f of %s %s", r.GbpsRatio, r.RTTRatio, r.RefTool, r.Reference)
	}
	if r.Error != "" {
		fmt.Fprintf(os.Stderr, "  (%s)", r.Error)
	}
	fmt.Fprintln(os.Stderr)
}

// Names of the root data paths.
const (
	pathRawVeth       = "raw veth pair (kernel limit)"
	pathC2C           = "container → container"
	pathHostToC       = "host → container"
	pathWANRouted     = "wan → container, routed, no NAT"
	pathWANPublished  = "wan → published port"
	pathHostPublished = "host → published port on 127.0.0.1"
	pathCToWAN        = "container → wan (masquerade)"
	pathProxy         = "wan → userland proxy (socat)"
)

// serveTargets starts an iperf3 server and a ping-pong listener inside t.
func serveTargets(env *benchEnv, t *nsThread, bind string) error {
	if _, err := background(env.clean, t, "iperf3", "-s", "-B", bind, "-p", strconv.Itoa(iperfPort)); err != nil {
		return err
	}
	ln, err := t.listen(net.JoinHostPort(bind, strconv.Itoa(pingPongPort)))
	if err != nil {
		return err
	}
	env.clean.Push("ping-pong listener", ln.Close)
	go servePingPong(ln)
	return nil
}

func runDataPathSection(ctx context.Context, env *benchEnv, res *results) (err error) {
	mark := env.clean.Mark()
	defer func() { err = errors.Join(err, env.clean.UnwindTo(mark)) }()
	l, err := newLab(ctx, env.clean)
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp(env.tmp, "datapath-")
	if err != nil {
		return err
	}
	env.clean.Push("data-path directory", func() error { return os.RemoveAll(root) })
	if err := l.addContainerNamespaces(ctx, 3); err != nil {
		return err
	}
	m, err := network.New(network.Options{Root: root, HostNetNS: l.hostPath, NoFastPath: noFastPath()})
	if err != nil {
		return err
	}
	env.clean.Push("ctnet manager", m.Close)
	noMasquerade := false
	for _, spec := range []network.NetworkSpec{
		{Name: ctnetNetwork, Subnet: ctnetPrefix + ".0.0/24"},
		{Name: "routed", Subnet: "10.92.0.0/24", Masquerade: &noMasquerade},
	} {
		if _, err := m.CreateNetwork(context.Background(), spec); err != nil {
			return err
		}
	}
	var publish []network.PortSpec
	for _, p := range []int{iperfPort, pingPongPort} {
		ps, err := network.ParsePort(strconv.Itoa(p) + ":" + strconv.Itoa(p))
		if err != nil {
			return err
		}
		publish = append(publish, ps)
	}
	threads := map[int]*nsThread{}
	ips := map[int]netip.Addr{}
	for i, spec := range map[int]network.ContainerSpec{
		1: {Name: "client", Network: network.OnNetwork(ctnetNetwork)},
		2: {Name: "server", Network: network.OnNetwork(ctnetNetwork), Ports: publish},
		3: {Name: "routed", Network: network.OnNetwork("routed")},
	} {
		spec.NetNS = l.containerNSPath(i)
		c, err := m.Create(context.Background(), spec)
		if err != nil {
			return fmt.Errorf("create container %s: %w", spec.Name, err)
		}
		env.clean.Push("container "+spec.Name, func() error { return m.Remove(context.Background(), spec.Name, false) })
		ips[i] = c.Attachments[0].IP
		if threads[i], err = newNSThread(spec.NetNS); err != nil {
			return err
		}
		env.clean.Push("container thread", func() error { threads[i].close(); return nil })
	}
	if _, err := l.wan.run(ctx, nil, nil, "ip", "route", "add", "10.92.0.0/24", "via", hostUplinkIP); err != nil {
		return err
	}
	rawA, rawB, err := rawVethPair(ctx, env, l)
	if err != nil {
		return err
	}
	for t, bind := range map[*nsThread]string{threads[2]: "0.0.0.0", threads[3]: "0.0.0.0", l.wan: wanIP, rawB: "10.99.0.2"} {
		if err := serveTargets(env, t, bind); err != nil {
			return err
		}
	}
	server := ips[2].String()
	for _, fwd := range [][2]int{{15201, iperfPort}, {15700, pingPongPort}} {
		if _, err := background(env.clean, l.host, "socat",
			fmt.Sprintf("TCP-LISTEN:%d,bind=%s,reuseaddr,fork", fwd[0], hostUplinkIP),
			fmt.Sprintf("TCP:%s:%d", server, fwd[1])); err != nil {
			return err
		}
	}
	for _, addr := range []string{net.JoinHostPort(server, strconv.Itoa(iperfPort)), "10.99.0.2:5201", hostUplinkIP + ":15201"} {
		from := l.host
		if addr == "10.99.0.2:5201" {
			from = rawA
		}
		if err := waitListening(ctx, from, addr); err != nil {
			return err
		}
	}
	res.DataPath = measurePaths(ctx, env, []pathProbe{
		{path: pathRawVeth, tool: "kernel", from: rawA, host: "10.99.0.2", iperf: iperfPort, pingPong: pingPongPort},
		{path: pathC2C, tool: "ctnet", from: threads[1], host: server, iperf: iperfPort, pingPong: pingPongPort, reference: pathRawVeth, refTool: "kernel"},
		{path: pathHostToC, tool: "ctnet", from: l.host, host: server, iperf: iperfPort, pingPong: pingPongPort, reference: pathRawVeth, refTool: "kernel"},
		{path: pathWANRouted, tool: "ctnet", from: l.wan, host: ips[3].String(), iperf: iperfPort, pingPong: pingPongPort, reference: pathRawVeth, refTool: "kernel"},
		{path: pathWANPublished, tool: "ctnet", from: l.wan, host: hostUplinkIP, iperf: iperfPort, pingPong: pingPongPort, reference: pathWANRouted},
		{path: pathHostPublished, tool: "ctnet", from: l.host, host: "127.0.0.1", iperf: iperfPort, pingPong: pingPongPort, reference: pathHostToC},
		{path: pathCToWAN, tool: "ctnet", from: threads[1], host: wanIP, iperf: iperfPort, pingPong: pingPongPort, reference: pathRawVeth, refTool: "kernel"},
		{path: pathProxy, tool: "socat", from: l.wan, host: hostUplinkIP, iperf: 15201, pingPong: 15700, reference: pathWANPublished, refTool: "ctnet"},
	})
	return nil
}

// rawVethPair makes two namespaces joined by nothing but a veth pair: the fastest
// way between two namespaces, the limit for every bridged path.
func rawVethPair(ctx context.Context, env *benchEnv, l *lab) (a, b *nsThread, err error) {
	var paths [2]string
	for k, side := range []string{"rawa", "rawb"} {
		if paths[k], err = addNetNS(ctx, env.clean, "ctbc"+l.id+"-"+side); err != nil {
			return nil, nil, err
		}
	}
	if a, err = newNSThread(paths[0]); err != nil {
		return nil, nil, err
	}
	env.clean.Push("raw veth thread", func() error { a.close(); return nil })
	if b, err = newNSThread(paths[1]); err != nil {
		return nil, nil, err
	}
	env.clean.Push("raw veth thread", func() error { b.close(); return nil })
	if err := a.runAll(ctx, [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", paths[1]},
		{"ip", "addr", "add", "10.99.0.1/24", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
	}); err != nil {
		return nil, nil, err
	}
	return a, b, b.runAll(ctx, [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", "10.99.0.2/24", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
	})
}

// noFastPath is CTNET_FASTPATH=off, as the CLI reads it: the bridge alone carries
// traffic between containers, for an A/B of the fast path in one run.
func noFastPath() bool { return os.Getenv("CTNET_FASTPATH") == "off" }
