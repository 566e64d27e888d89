package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ctnet/ctnet/network"
)

// rulesResult is how publishing scales with the number of ports already published.
type rulesResult struct {
	Steps []ruleStep `json:"steps"`
}

// ruleStep is one tool at k ports already published.
type ruleStep struct {
	Tool string `json:"tool"`
	K    int    `json:"k"`
	// OnePortMs is the time to publish one more port: for ctnet a container attach
	// with one port minus one without (medians of probeRepeats), for the article
	// script its two iptables commands.
	OnePortMs float64 `json:"one_port_ms"`
	// ProbeMs is the whole probe: a container attach with one port, or the two
	// iptables commands.
	ProbeMs float64 `json:"probe_ms"`
	// BatchPerPortMs is the time per port of publishing the next batch of ports at
	// once (a container with a port range, less a container without ports;
	// iptables-restore), over the batch size; none after the last batch.
	BatchPerPortMs value `json:"batch_per_port_ms"`
	// Rules is the number of rules in the tool's tables; Traversed the rules a new
	// connection to the last published port evaluates before it is DNATed.
	Rules     int `json:"rules"`
	Traversed int `json:"traversed"`
}

const probeRepeats = 9

// Published port numbers: batches from rangeBase, the probes at probePort.
const (
	rangeBase = 30000
	probePort = 60000
)

func runRulesSection(ctx context.Context, env *benchEnv, res *results) error {
	ctnetSteps, err := ctnetRuleScaling(ctx, env)
	res.Rules.Steps = append(res.Rules.Steps, ctnetSteps...)
	if err != nil {
		return fmt.Errorf("ctnet: %w", err)
	}
	manualSteps, err := manualRuleScaling(ctx, env)
	res.Rules.Steps = append(res.Rules.Steps, manualSteps...)
	if err != nil {
		return fmt.Errorf("article script: %w", err)
	}
	return nil
}

func logRuleStep(s ruleStep) {
	fmt.Fprintf(os.Stderr, "   %-14s k=%-6d probe %6.2f ms  one port %6.2f ms  batch %s ms/port  rules %6d  traversed %6d\n",
		s.Tool, s.K, s.ProbeMs, s.OnePortMs, num("%.3f", s.BatchPerPortMs), s.Rules, s.Traversed)
}

// ctnetRuleScaling publishes ports in batches of PortStep (one attached container
// with a host port range each) through the Go API, and before each batch times a
// probe container with and without one port.
func ctnetRuleScaling(ctx context.Context, env *benchEnv) (steps []ruleStep, err error) {
	mark := env.clean.Mark()
	defer func() { err = errors.Join(err, env.clean.UnwindTo(mark)) }()
	l, err := newLab(ctx, env.clean)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(env.tmp, "rules-")
	if err != nil {
		return nil, err
	}
	env.clean.Push("rules directory", func() error { return os.RemoveAll(root) })
	batches := env.cfg.Ports / env.cfg.PortStep
	probeIndex := batches + 1
	if err := l.addContainerNamespaces(ctx, probeIndex); err != nil {
		return nil, err
	}
	m, err := network.New(network.Options{Root: root, HostNetNS: l.hostPath, NoFastPath: noFastPath()})
	if err != nil {
		return nil, err
	}
	env.clean.Push("ctnet manager", m.Close)
	if _, err := m.CreateNetwork(context.Background(), network.NetworkSpec{Name: ctnetNetwork, Subnet: ctnetPrefix + ".0.0/16"}); err != nil {
		return nil, err
	}
	create := func(i int, publish string) (time.Duration, error) {
		spec := network.ContainerSpec{Name: ctnetContainer(i), Network: network.OnNetwork(ctnetNetwork), NetNS: l.containerNSPath(i)}
		if publish != "" {
			p, err := network.ParsePort(publish)
			if err != nil {
				return 0, err
			}
			spec.Ports = []network.PortSpec{p}
		}
		t0 := time.Now()
		_, err := m.Create(context.Background(), spec)
		return time.Since(t0), err
	}
	// probe times a container attach without ports and one with one port, in turns
	// so that other work on the machine hits both alike, and returns the medians.
	probe := func() (without, with float64, err error) {
		var samples [2][]float64
		for range probeRepeats {
			for k, publish := range []string{"", fmt.Sprintf("%d:%d", probePort, containerPort)} {
				d, err := create(probeIndex, publish)
				if err != nil {
					return 0, 0, err
				}
				samples[k] = append(samples[k], ms(d))
				if err := m.Remove(context.Background(), ctnetContainer(probeIndex), false); err != nil {
					return 0, 0, err
				}
			}
		}
		return median(samples[0]), median(samples[1]), nil
	}
	for b := 0; b <= batches; b++ {
		if ctx.Err() != nil {
			return steps, ctx.Err()
		}
		step := ruleStep{Tool: "ctnet", K: b * env.cfg.PortStep, BatchPerPortMs: value(math.NaN())}
		out, err := l.host.run(ctx, nil, nil, "nft", "list", "table", "inet", "ctnet")
		if err != nil {
			return steps, err
		}
		counts := nftRuleCounts(out)
		for _, n := range counts {
			step.Rules += n
		}
		// A new connection to a published port: the nat prerouting hook jumps to
		// publish, whose map lookups DNAT it.
		step.Traversed = counts["prerouting"] + counts["publish"]
		without, with, err := probe()
		if err != nil {
			return steps, err
		}
		step.ProbeMs = with
		step.OnePortMs = step.ProbeMs - without
		if b < batches {
			first := rangeBase + b*env.cfg.PortStep
			last := first + env.cfg.PortStep - 1
			d, err := create(b+1, fmt.Sprintf("%d-%d:%d-%d", first, last, first, last))
			if err != nil {
				return steps, fmt.Errorf("publish ports %d-%d: %w", first, last, err)
			}
			step.BatchPerPortMs = value((ms(d) - without) / float64(env.cfg.PortStep))
		}
		logRuleStep(step)
		steps = append(steps, step)
	}
	return steps, nil
}

// nftRuleCounts counts the rules of each chain in `nft list table` output.
func nftRuleCounts(listing []byte) map[string]int {
	counts := map[string]int{}
	chain := ""
	for _, line := range strings.Split(string(listing), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "chain "):
			chain = strings.Fields(line)[1]
		case line == "}":
			chain = ""
		case chain != "" && line != "" && !strings.HasPrefix(line, "type "):
			counts[chain]++
		}
	}
	return counts
}

// manualRuleScaling publishes the same ports the reference article's way: a DNAT
// rule pair per port (PREROUTING and OUTPUT), batches through iptables-restore.
func manualRuleScaling(ctx context.Context, env *benchEnv) (steps []ruleStep, err error) {
	mark := env.clean.Mark()
	defer func() { err = errors.Join(err, env.clean.UnwindTo(mark)) }()
	l, err := newLab(ctx, env.clean)
	if err != nil {
		return nil, err
	}
	rule := func(op, chain string, port int) []string {
		return []string{"-t", "nat", op, chain, "-d", hostUplinkIP, "-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(port),
			"-j", "DNAT", "--to-destination", manualPrefix + ".0.2:" + strconv.Itoa(containerPort)}
	}
	pair := func(op string, port int) [][]string {
		var cmds [][]string
		for _, chain := range []string{"PREROUTING", "OUTPUT"} {
			cmds = append(cmds, append([]string{"iptables", "-w"}, rule(op, chain, port)...))
		}
		return cmds
	}
	batches := env.cfg.Ports / env.cfg.PortStep
	for b := 0; b <= batches; b++ {
		if ctx.Err() != nil {
			return steps, ctx.Err()
		}
		step := ruleStep{Tool: "article script", K: b * env.cfg.PortStep, BatchPerPortMs: value(math.NaN())}
		out, err := l.host.run(ctx, nil, nil, "iptables-save", "-t", "nat")
		if err != nil {
			return steps, err
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "-A ") {
				step.Rules++
			}
			if strings.HasPrefix(line, "-A PREROUTING ") {
				step.Traversed++ // the last port's rule is the last of PREROUTING
			}
		}
		var samples []float64
		for range probeRepeats {
			t0 := time.Now()
			if err := l.host.runAll(ctx, pair("-A", probePort)); err != nil {
				return steps, err
			}
			samples = append(samples, ms(time.Since(t0)))
			if err := l.host.runAll(ctx, pair("-D", probePort)); err != nil {
				return steps, err
			}
		}
		step.OnePortMs = median(samples)
		step.ProbeMs = step.OnePortMs
		if b < batches {
			var batch bytes.Buffer
			batch.WriteString("*nat\n")
			for port := rangeBase + b*env.cfg.PortStep; port < rangeBase+(b+1)*env.cfg.PortStep; port++ {
				for _, chain := range []string{"PREROUTING", "OUTPUT"} {
					batch.WriteString(strings.Join(rule("-A", chain, port)[2:], " ") + "\n")
				}
			}
			batch.WriteString("COMMIT\n")
			t0 := time.Now()
			if _, err := l.host.run(ctx, batch.Bytes(), nil, "iptables-restore", "-w", "--noflush"); err != nil {
				return steps, err
			}
			step.BatchPerPortMs = value(ms(time.Since(t0)) / float64(env.cfg.PortStep))
		}
		logRuleStep(step)
		steps = append(steps, step)
	}
	return steps, nil
}
