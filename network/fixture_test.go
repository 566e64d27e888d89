package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// testHost is a Manager in this process whose host is a sandbox namespace, with the
// namespaces its attached containers use. Its cleanup removes what the test left
// through the API, then fails the test unless the sandbox and every namespace it
// made are as they were at the start.
type testHost struct {
	t    *testing.T
	sb   *lab.Sandbox
	root string
	m    *Manager
	// netnses are the namespaces made for attached containers, with their state
	// when they were made.
	netnses map[string]string
}

func newTestHost(t *testing.T) *testHost {
	t.Helper()
	lab.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		lab.Missing(t, "needs nft: %v", err)
	}
	h := &testHost{t: t, sb: lab.NewSandbox(t), root: lab.Root(t), netnses: map[string]string{}}
	h.m = h.manager(h.root)
	start := h.kernel(h.sb.Path)
	t.Cleanup(func() {
		h.removeAll(h.m)
		if diff := diffLines(start, h.kernel(h.sb.Path)); diff != "" {
			t.Errorf("the sandbox host is not as it was before the test:\n%s", diff)
		}
		for path, was := range h.netnses {
			if diff := diffLines(was, h.kernel(path)); diff != "" {
				t.Errorf("namespace %s is not as it was before the test:\n%s", path, diff)
			}
			if out, err := exec.Command("ip", "netns", "del", filepath.Base(path)).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", path, err, out)
			}
		}
	})
	return h
}

// manager is a Manager of root on the sandbox, closed at cleanup.
func (h *testHost) manager(root string) *Manager {
	h.t.Helper()
	m, err := New(Options{Root: root, HostNetNS: h.sb.Path})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { m.Close() })
	return m
}

// removeAll removes every container and network of m. It runs at cleanup, when the
// test's context has ended.
func (h *testHost) removeAll(m *Manager) {
	h.t.Helper()
	cs, err := m.Containers(true)
	if err != nil {
		h.t.Errorf("list containers at cleanup: %v", err)
	}
	for _, c := range cs {
		if err := m.Remove(context.Background(), c.ID, true); err != nil {
			h.t.Errorf("remove container %s at cleanup: %v", c.Name, err)
		}
	}
	ns, err := m.Networks()
	if err != nil {
		h.t.Errorf("list networks at cleanup: %v", err)
	}
	for _, n := range ns {
		if err := m.RemoveNetwork(context.Background(), n.Name, true); err != nil {
			h.t.Errorf("remove network %s at cleanup: %v", n.Name, err)
		}
	}
	m.deleting.Wait() // for the links the removals retired
}

// netns makes a namespace with loopback up, as a runtime hands one to attach; the
// cleanup checks it is as it was made, then deletes it.
func (h *testHost) netns() string {
	h.t.Helper()
	name := lab.RandomName("ctt-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		h.t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	path := "/run/netns/" + name
	h.netnses[path] = ""
	h.run(path, "ip", "link", "set", "lo", "up")
	h.netnses[path] = h.kernel(path)
	return path
}

func (h *testHost) createNetwork(name, subnet string) *Network {
	h.t.Helper()
	n, err := h.m.CreateNetwork(h.t.Context(), NetworkSpec{Name: name, Subnet: subnet})
	if err != nil {
		h.t.Fatalf("create network %s: %v", name, err)
	}
	return n
}

// createNetworkSpec makes a network as spec asks.
func (h *testHost) createNetworkSpec(spec NetworkSpec) *Network {
	h.t.Helper()
	n, err := h.m.CreateNetwork(h.t.Context(), spec)
	if err != nil {
		h.t.Fatalf("create network %s: %v", spec.Name, err)
	}
	return n
}

// attach makes an attached container on network in a new namespace.
func (h *testHost) attach(name, network string, ports ...string) *Container {
	h.t.Helper()
	c, err := h.m.Create(h.t.Context(), h.attachSpec(name, network, ports...))
	if err != nil {
		h.t.Fatalf("attach %s: %v", name, err)
	}
	return c
}

func (h *testHost) attachSpec(name, network string, ports ...string) ContainerSpec {
	h.t.Helper()
	spec := ContainerSpec{Name: name, Network: OnNetwork(network), NetNS: h.netns()}
	for _, p := range ports {
		ps, err := ParsePort(p)
		if err != nil {
			h.t.Fatal(err)
		}
		spec.Ports = append(spec.Ports, ps)
	}
	return spec
}

func (h *testHost) container(ref string) *Container {
	h.t.Helper()
	c, err := h.m.Container(ref)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// run runs a command in the namespace at path and returns its standard output.
func (h *testHost) run(path string, args ...string) string {
	h.t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("nsenter", append([]string{"--net=" + path}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		h.t.Fatalf("in %s: %s: %v: %s", path, strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out)
}

func (h *testHost) json(path string, v any, args ...string) {
	h.t.Helper()
	if err := json.Unmarshal([]byte(h.run(path, args...)), v); err != nil {
		h.t.Fatalf("in %s: %s: %v", path, strings.Join(args, " "), err)
	}
}

// kernel is what a change may alter in the namespace at path, as iproute2, sysctl
// and nft print it: one sorted line per link, address, route, sysctl and nftables
// object, each starting with the kind and the interface it is on ("-" for none).
// Kernel-chosen numbers (interface indexes, nft handles) and states the kernel
// changes by itself (carrier, operstate) are left out.
func (h *testHost) kernel(path string) string {
	h.t.Helper()
	var lines []string
	var links []struct {
		IfName   string   `json:"ifname"`
		Flags    []string `json:"flags"`
		MTU      int      `json:"mtu"`
		Master   string   `json:"master"`
		Address  string   `json:"address"`
		Group    string   `json:"group"`
		Alias    string   `json:"ifalias"`
		LinkInfo struct {
			Kind      string `json:"info_kind"`
			SlaveData struct {
				Hairpin *bool `json:"hairpin"`
			} `json:"info_slave_data"`
		} `json:"linkinfo"`
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	h.json(path, &links, "ip", "-j", "-d", "addr", "show")
	for _, l := range links {
		hairpin := "-"
		if hp := l.LinkInfo.SlaveData.Hairpin; hp != nil {
			hairpin = fmt.Sprint(*hp)
		}
		lines = append(lines, fmt.Sprintf("link %s kind=%s up=%t mtu=%d master=%s mac=%s group=%s alias=%q hairpin=%s",
			l.IfName, l.LinkInfo.Kind, slices.Contains(l.Flags, "UP"), l.MTU, l.Master, l.Address, l.Group, l.Alias, hairpin))
		for _, a := range l.AddrInfo {
			// IPv6 link-local addresses come late (DAD) on links ctnet has not set up.
			if a.Family == "inet" || a.Family == "inet6" && a.Scope == "global" {
				lines = append(lines, fmt.Sprintf("addr %s %s/%d", l.IfName, a.Local, a.PrefixLen))
			}
		}
	}
	var routes []struct {
		Type     string `json:"type"`
		Dst      string `json:"dst"`
		Gateway  string `json:"gateway"`
		Dev      string `json:"dev"`
		Table    string `json:"table"`
		Protocol string `json:"protocol"`
		Scope    string `json:"scope"`
		PrefSrc  string `json:"prefsrc"`
	}
	h.json(path, &routes, "ip", "-j", "-4", "route", "show", "table", "all")
	for _, r := range routes {
		lines = append(lines, fmt.Sprintf("route %s %s %s via=%s table=%s proto=%s scope=%s src=%s",
			r.Dev, r.Type, r.Dst, r.Gateway, r.Table, r.Protocol, r.Scope, r.PrefSrc))
	}
	for _, s := range strings.Split(strings.TrimSpace(h.run(path, "sysctl", "-a", "-r", `^net\.(ipv4\.(ip_forward|conf\..*\.route_localnet)|ipv6\.conf\..*\.(forwarding|disable_ipv6))$`)), "\n") {
		dev := "-"
		if f := strings.Split(s, "."); len(f) > 4 && f[2] == "conf" {
			dev = f[3]
		}
		lines = append(lines, "sysctl "+dev+" "+s)
	}
	var ruleset struct {
		Nftables []map[string]any `json:"nftables"`
	}
	h.json(path, &ruleset, "nft", "-j", "list", "ruleset")
	for _, obj := range ruleset.Nftables {
		if _, ok := obj["metainfo"]; ok {
			continue
		}
		b, err := json.Marshal(canonicalNft(obj))
		if err != nil {
			h.t.Fatal(err)
		}
		lines = append(lines, "nft - "+string(b))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// canonicalNft drops nft's handles and sorts set and map elements, whose order
// follows the order they were added in.
func canonicalNft(v any) any {
	switch v := v.(type) {
	case map[string]any:
		delete(v, "handle")
		for k, x := range v {
			v[k] = canonicalNft(x)
		}
		if elems, ok := v["elem"].([]any); ok {
			slices.SortFunc(elems, func(a, b any) int {
				ja, _ := json.Marshal(a)
				jb, _ := json.Marshal(b)
				return bytes.Compare(ja, jb)
			})
		}
	case []any:
		for i, x := range v {
			v[i] = canonicalNft(x)
		}
	}
	return v
}

// state is everything a change may alter, by section: the kernel state of the
// sandbox ("host") and of each attached namespace (by path), and what the API lists
// with the files under the root ("store").
func (h *testHost) state() map[string]string {
	h.t.Helper()
	state := map[string]string{"host": h.kernel(h.sb.Path), "store": h.stored()}
	for path := range h.netnses {
		state[path] = h.kernel(path)
	}
	return state
}

// stored is what the API lists and the containers' files under the root.
func (h *testHost) stored() string {
	h.t.Helper()
	networks, err := h.m.Networks()
	if err != nil {
		h.t.Fatal(err)
	}
	containers, err := h.m.Containers(true)
	if err != nil {
		h.t.Fatal(err)
	}
	// The directories every change makes hold the containers' namespaces and runtime
	// files.
	var files []string
	for _, dir := range []string{"netns", "containers"} {
		top := filepath.Join(h.root, dir)
		filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
			if err == nil && path != top {
				rel, _ := filepath.Rel(h.root, path)
				files = append(files, rel)
			}
			return nil
		})
	}
	out, err := json.MarshalIndent(map[string]any{"networks": networks, "containers": containers, "files": files}, "", " ")
	if err != nil {
		h.t.Fatal(err)
	}
	return string(out)
}

// diffLines lists the lines only a has ("-") and only b has ("+"), or "".
func diffLines(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range la {
		if !slices.Contains(lb, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range lb {
		if !slices.Contains(la, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// nftLines are the lines of kernel's nft objects that mention every one of words.
func nftLines(kernel string, words ...string) []string {
	var out []string
	for _, l := range strings.Split(kernel, "\n") {
		if strings.HasPrefix(l, "nft ") && !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(l, w) }) {
			out = append(out, l)
		}
	}
	return out
}

// requireErr fails the test unless err matches every target.
func requireErr(t *testing.T, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("error %v (%T) does not match %v", err, err, target)
		}
	}
}
