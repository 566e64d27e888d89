package network

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var errInjected = errors.New("injected failure")

// setFailStep arms the failure seam for the rest of the test.
func setFailStep(t *testing.T, f func(step string) error) {
	failStep = f
	t.Cleanup(func() { failStep = nil })
}

// randomPart is what differs between two runs of one change: IDs in names.
var randomPart = regexp.MustCompile(`(vc|ib|ct-)[0-9a-f]{8,}`)

func stepName(step string) string { return randomPart.ReplaceAllString(step, "${1}ID") }

// A change that fails after any of its kernel steps leaves the kernel (links,
// addresses, routes, forwarding and route_localnet, the ruleset, in the host and in
// the attached namespaces), the store as the API lists it and the files under the
// root as they were, returns the failure, and can then be made whole. For each
// change the steps of a successful run are counted; then it fails after each in turn.
//
// Teardown deletes links without an undo (theirs is a step without one: a deleted veth or
// bridge is not made again), so after a teardown step "delete veth X" or "delete
// bridge X" has run, X and what was on it (a veth's peer in the container too) may
// be missing; nothing else may differ, and repeating the change finishes it.
func TestRollbackAtEveryStep(t *testing.T) {
	cases := []struct {
		name string
		// prepare makes the state before the change and returns the change.
		prepare func(h *testHost) func() error
	}{
		{"CreateNetwork, the first", func(h *testHost) func() error {
			return func() error {
				_, err := h.m.CreateNetwork(h.t.Context(), NetworkSpec{Name: "n1", Subnet: "10.91.1.0/24", Bridge: "ctb-n1"})
				return err
			}
		}},
		{"CreateNetwork beside another", func(h *testHost) func() error {
			h.createNetwork("n0", "10.91.0.0/24")
			return func() error {
				_, err := h.m.CreateNetwork(h.t.Context(), NetworkSpec{Name: "n1", Subnet: "10.91.1.0/24", Bridge: "ctb-n1"})
				return err
			}
		}},
		{"CreateNetwork dual-stack, the first", func(h *testHost) func() error {
			return func() error {
				_, err := h.m.CreateNetwork(h.t.Context(), dualStack("n1", 1))
				return err
			}
		}},
		{"Create attached with ports on a dual-stack network", func(h *testHost) func() error {
			h.createNetworkSpec(dualStack("n1", 1))
			spec := h.attachSpec("c1", "n1", "8080:80", "5353:53/udp")
			return func() error {
				_, err := h.m.Create(h.t.Context(), spec)
				return err
			}
		}},
		{"RemoveNetwork dual-stack, the last", func(h *testHost) func() error {
			h.createNetworkSpec(dualStack("n1", 1))
			return func() error { return h.m.RemoveNetwork(h.t.Context(), "n1", false) }
		}},
		{"Create attached with ports", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			spec := h.attachSpec("c1", "n1", "8080:80", "5353:53/udp")
			return func() error {
				_, err := h.m.Create(h.t.Context(), spec)
				return err
			}
		}},
		{"Connect", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			h.createNetwork("n2", "10.91.2.0/24")
			h.attach("c1", "n1", "8080:80")
			return func() error {
				_, err := h.m.Connect(h.t.Context(), "n2", "c1", ConnectOptions{})
				return err
			}
		}},
		{"Disconnect", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			h.createNetwork("n2", "10.91.2.0/24")
			h.attach("c1", "n1", "8080:80")
			h.connect("n2", "c1", ConnectOptions{})
			return func() error { return h.m.Disconnect(h.t.Context(), "n2", "c1") }
		}},
		{"Remove attached with ports", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			h.attach("c1", "n1", "8080:80", "5353:53/udp")
			return func() error { return h.m.Remove(h.t.Context(), "c1", false) }
		}},
		{"Create attached with bandwidth limits", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			spec := h.attachSpec("c1", "n1")
			spec.Bandwidth = Bandwidth{IngressRate: 20e6, EgressRate: 10e6}
			return func() error {
				_, err := h.m.Create(h.t.Context(), spec)
				return err
			}
		}},
		{"Connect with bandwidth limits", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			h.createNetwork("n2", "10.91.2.0/24")
			h.attach("c1", "n1")
			return func() error {
				_, err := h.m.Connect(h.t.Context(), "n2", "c1", ConnectOptions{Bandwidth: Bandwidth{EgressRate: 10e6}})
				return err
			}
		}},
		{"Remove attached with bandwidth limits", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			spec := h.attachSpec("c1", "n1")
			spec.Bandwidth = Bandwidth{IngressRate: 20e6, EgressRate: 10e6}
			if _, err := h.m.Create(h.t.Context(), spec); err != nil {
				h.t.Fatal(err)
			}
			return func() error { return h.m.Remove(h.t.Context(), "c1", false) }
		}},
		{"Create attached on a macvlan network", func(h *testHost) func() error {
			h.createMacvlan("lan", "10.92.0.0/24")
			spec := h.attachSpec("c1", "lan")
			return func() error {
				_, err := h.m.Create(h.t.Context(), spec)
				return err
			}
		}},
		{"Connect to a macvlan network", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			h.createMacvlan("lan", "10.92.0.0/24")
			h.attach("c1", "n1")
			return func() error {
				_, err := h.m.Connect(h.t.Context(), "lan", "c1", ConnectOptions{})
				return err
			}
		}},
		{"Remove attached on a macvlan network", func(h *testHost) func() error {
			h.createMacvlan("lan", "10.92.0.0/24")
			h.attach("c1", "lan")
			return func() error { return h.m.Remove(h.t.Context(), "c1", false) }
		}},
		{"RemoveNetwork, the last", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			return func() error { return h.m.RemoveNetwork(h.t.Context(), "n1", false) }
		}},
		{"RemoveNetwork forced, with a container connected", func(h *testHost) func() error {
			h.createNetwork("n1", "10.91.1.0/24")
			h.createNetwork("n2", "10.91.2.0/24")
			h.attach("c1", "n1")
			h.connect("n2", "c1", ConnectOptions{})
			return func() error { return h.m.RemoveNetwork(h.t.Context(), "n2", true) }
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var steps []string
			{
				h := newTestHost(t)
				change := tc.prepare(h)
				setFailStep(t, func(step string) error {
					steps = append(steps, stepName(step))
					return nil
				})
				if err := change(); err != nil {
					t.Fatalf("the change without failures: %v", err)
				}
				failStep = nil
			}
			if len(steps) == 0 {
				t.Fatal("the change recorded no step")
			}
			for k, step := range steps {
				t.Run(fmt.Sprintf("after %d %s", k+1, step), func(t *testing.T) {
					h := newTestHost(t)
					change := tc.prepare(h)
					before := h.state()
					peers := h.vethPeers()
					var seen []string
					setFailStep(t, func(step string) error {
						if seen = append(seen, step); len(seen) == k+1 {
							return errInjected
						}
						return nil
					})
					err := change()
					failStep = nil
					if len(seen) <= k || stepName(seen[k]) != step {
						t.Fatalf("the change went through steps %q, not to step %d %q of its successful run", seen, k+1, step)
					}
					if !errors.Is(err, errInjected) {
						t.Fatalf("the change failing after step %q returned %v, not the injected failure", step, err)
					}
					want := withoutDeletedLinks(before, seen, peers)
					for section, after := range h.state() {
						if diff := diffLines(want[section], after); diff != "" {
							t.Errorf("%s after the change failed after %q (- expected, + found):\n%s", section, step, diff)
						}
					}
					if err := change(); err != nil {
						t.Fatalf("the change repeated after its failure: %v", err)
					}
				})
			}
		})
	}
}

// createMacvlan makes a macvlan network on a parent it adds to the host: a veth
// (this kernel has no dummy device) whose two ends stay on the host.
func (h *testHost) createMacvlan(name, subnet string) *Network {
	h.t.Helper()
	h.run(h.sb.Path, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
	h.t.Cleanup(func() { exec.Command("ip", "-n", h.sb.Name, "link", "del", "lan0").Run() })
	h.run(h.sb.Path, "ip", "link", "set", "lan0", "up")
	h.run(h.sb.Path, "ip", "link", "set", "lan1", "up")
	n, err := h.m.CreateNetwork(h.t.Context(), NetworkSpec{Name: name, Subnet: subnet, Driver: DriverMacvlan, Parent: "lan0"})
	if err != nil {
		h.t.Fatalf("create macvlan network %s: %v", name, err)
	}
	return n
}

func (h *testHost) connect(network, ref string, opts ConnectOptions) *Attachment {
	h.t.Helper()
	a, err := h.m.Connect(h.t.Context(), network, ref, opts)
	if err != nil {
		h.t.Fatalf("connect %s to %s: %v", ref, network, err)
	}
	return a
}

// vethPeer is where a host veth's other end is: a container's namespace and name.
type vethPeer struct{ netns, ifName string }

// vethPeers are the peers of the host veths of every container.
func (h *testHost) vethPeers() map[string]vethPeer {
	h.t.Helper()
	cs, err := h.m.Containers(true)
	if err != nil {
		h.t.Fatal(err)
	}
	peers := map[string]vethPeer{}
	for _, c := range cs {
		for _, a := range c.Attachments {
			if a.HostVeth == "" {
				// A macvlan interface, named by the step that deletes it.
				peers["macvlan "+a.IfName+" of "+c.Name] = vethPeer{c.NetNS, a.IfName}
			} else {
				peers[a.HostVeth] = vethPeer{c.NetNS, a.IfName}
			}
		}
	}
	return peers
}

// withoutDeletedLinks is the state without the links that the steps deleted (a
// veth's peer too) and everything on them.
func withoutDeletedLinks(state map[string]string, steps []string, peers map[string]vethPeer) map[string]string {
	gone := map[string][]string{} // section → interfaces
	for _, step := range steps {
		if name, ok := strings.CutPrefix(step, "delete veth "); ok {
			gone["host"] = append(gone["host"], name)
			if p, ok := peers[name]; ok {
				gone[p.netns] = append(gone[p.netns], p.ifName)
			}
		} else if name, ok := strings.CutPrefix(step, "delete ifb "); ok {
			gone["host"] = append(gone["host"], name)
		} else if p, ok := peers[strings.TrimPrefix(step, "delete ")]; ok && strings.HasPrefix(step, "delete macvlan ") {
			gone[p.netns] = append(gone[p.netns], p.ifName)
		}
	}
	out := map[string]string{}
	for section, text := range state {
		var kept []string
		for _, line := range strings.Split(text, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || !slices.Contains(gone[section], f[1]) {
				kept = append(kept, line)
			}
		}
		out[section] = strings.Join(kept, "\n")
	}
	return out
}

// dualStack is the spec of a dual-stack network: 10.91.N.0/24 and fd00:91:N::/64.
func dualStack(name string, n int) NetworkSpec {
	return NetworkSpec{Name: name, Subnet: fmt.Sprintf("10.91.%d.0/24", n), IPv6: true, Subnet6: fmt.Sprintf("fd00:91:%d::/64", n), Bridge: "ctb-" + name}
}
