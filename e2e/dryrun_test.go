package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/internal/lab"
)

// --dry-run changes nothing, neither in the kernel nor in the store, and the lines it
// prints, run with bash in another sandbox host, build what the command itself
// builds: links, addresses, routes, sysctls and the ruleset, compared as iproute2,
// sysctl and nft show them. --explain makes the change and prints the same lines.
// Commands: network create, attach with published ports, rm, network rm; run -d
// changes nothing either.
func TestDryRunChangesNothingAndReplays(t *testing.T) {
	e := newEnv(t)
	podA := lab.NewSandbox(t)
	b := lab.NewSandbox(t) // host B, where the lines are replayed
	podB := lab.NewSandbox(t)
	rootB := lab.Root(t)

	// dryRun runs the command with --dry-run, checks that nothing changed, and
	// returns its lines.
	dryRun := func(args ...string) string {
		t.Helper()
		before := e.world(podA)
		r := e.ctnet(append([]string{"--dry-run"}, args...)...)
		if r.Code != 0 {
			t.Fatalf("ctnet --dry-run %s: %s", strings.Join(args, " "), r)
		}
		if diff := before.Diff(e.world(podA)); diff != "" {
			t.Fatalf("ctnet --dry-run %s changed the host:\n%s", strings.Join(args, " "), diff)
		}
		if r.Stdout == "" {
			t.Fatalf("ctnet --dry-run %s printed nothing", strings.Join(args, " "))
		}
		t.Logf("ctnet --dry-run %s:\n%s", strings.Join(args, " "), r.Stdout)
		return r.Stdout
	}
	// explain runs the command with --explain and returns its stdout and lines.
	explain := func(args ...string) (stdout, lines string) {
		t.Helper()
		r := e.ctnet(append([]string{"--explain"}, args...)...)
		if r.Code != 0 {
			t.Fatalf("ctnet --explain %s: %s", strings.Join(args, " "), r)
		}
		return r.Stdout, r.Stderr
	}
	// sameLines holds a dry run's lines, with the IDs it drew replaced by those the
	// real command drew, to the lines --explain printed.
	sameLines := func(what, dry, explained string, ids map[string]string) string {
		t.Helper()
		dry = replaceIDs(dry, ids)
		if dry != explained {
			t.Errorf("%s: --dry-run and --explain print different lines:\n--- dry run\n%s\n--- explain\n%s", what, dry, explained)
		}
		return dry
	}

	create := []string{"network", "create", "web", "--subnet", "10.88.0.0/24", "--bridge", "brdry"}
	createLines := dryRun(create...)
	if _, err := os.Stat(filepath.Join(e.root, "state.db")); err == nil {
		t.Errorf("a dry run made the store")
	}
	netID, explained := explain(create...)
	netID = strings.TrimSpace(netID)
	createLines = sameLines("network create", createLines, explained, idsOf(t, createLines, "network", netID))

	attach := []string{"attach", "--netns", podA.Path, "--name", "c1", "--network", "web", "--ip", "10.88.0.5", "-p", "8080:80", "-p", "127.0.0.1:8443:443/tcp"}
	attachLines := dryRun(attach...)
	cID, explained := explain(attach...)
	cID = strings.TrimSpace(cID)
	attachLines = sameLines("attach", attachLines, explained, idsOf(t, attachLines, "container", cID))

	// run -d: its network, then a comment for the process.
	runLines := dryRun("run", "-d", "--name", "r1", "--network", "web", "-p", "8081:80", "--", "sleep", "1000")
	for _, want := range []string{"unshare --net=" + filepath.Join(e.root, "netns"), "ip link add vc", "add element inet ctnet ports_any { tcp . 8081 : 10.88.0.", "# then, not shown"} {
		if !strings.Contains(runLines, want) {
			t.Errorf("run -d --dry-run does not print %q", want)
		}
	}
	if out := e.must("ps", "-a", "-q"); strings.TrimSpace(out) != cID[:12] {
		t.Errorf("after run -d --dry-run, ps -a -q lists %q, want only c1 %s", out, cID)
	}

	// The replay: the lines with host B's paths for A's.
	paths := strings.NewReplacer(e.root, rootB, podA.Path, podB.Path)
	replay(t, b, paths.Replace(createLines+attachLines))
	hostLinks := []string{"brdry", "vc" + cID[:8]}
	// same compares host A, where the commands ran, with host B, where their lines
	// did; lines are those that built A's tables, if it has them.
	same := func(when, lines string) {
		t.Helper()
		for _, c := range []struct {
			what   string
			a, b   *lab.Sandbox
			links  []string
			routes bool
		}{{"host", e.host, b, hostLinks, false}, {"container", podA, podB, []string{"lo", "eth0"}, true}} {
			fa, fb := kernelFacts(t, c.a, c.links, c.routes), kernelFacts(t, c.b, c.links, c.routes)
			if fa != fb {
				t.Errorf("%s: the replayed lines built another %s:\n%s", when, c.what, lineDiff(fa, fb))
			}
		}
		ra, rb := ruleset(t, e.host, lines), ruleset(t, b, "")
		rb = strings.ReplaceAll(rb, rootB, e.root)
		if ra != rb {
			t.Errorf("%s: the replayed lines built another ruleset:\n%s", when, lineDiff(ra, rb))
		}
	}
	same("network create and attach", createLines)

	// The same lines, positive control of the comparison: the host veth is there.
	if facts := kernelFacts(t, b, hostLinks, false); !strings.Contains(facts, "vc"+cID[:8]+" veth master brdry") || !strings.Contains(facts, "hairpin true") {
		t.Errorf("host B's veth is not in its bridge with hairpin on:\n%s", facts)
	}

	// Teardown: rm, then network rm, each dry-run first, replayed on B.
	rmLines := dryRun("rm", "c1")
	_, explained = explain("rm", "c1")
	rmLines = sameLines("rm", rmLines, explained, nil)
	// The bridge's carrier goes with its last port, on the kernel's time: a
	// snapshot must not catch it going.
	if !eventually(func() bool {
		out, _ := e.host.Try("ip", "link", "show", "brdry")
		return strings.Contains(out, "NO-CARRIER")
	}) {
		t.Fatal("brdry keeps its carrier without ports")
	}
	netRmLines := dryRun("network", "rm", "web")
	_, explained = explain("network", "rm", "web")
	netRmLines = sameLines("network rm", netRmLines, explained, nil)
	replay(t, b, paths.Replace(rmLines+netRmLines))
	// The real commands' retired links are deleted by a process of their own, after them.
	if !eventually(func() bool {
		out, _ := e.host.Try("ip", "-o", "link", "show", "group", "0x63746e78")
		return strings.TrimSpace(out) == ""
	}) {
		t.Fatal("the links rm and network rm retired in host A are not deleted")
	}
	same("rm and network rm", "")
	if out, _ := b.Try("nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Errorf("network rm's lines left a ruleset in host B:\n%s", out)
	}
}

// A command that does not support --dry-run refuses it in one line and changes
// nothing; a dry run that the real command would refuse fails as it does, with its
// message and exit status.
func TestDryRunRefusals(t *testing.T) {
	e := newEnv(t)
	pod := lab.NewSandbox(t)
	e.must("network", "create", "web", "--subnet", "10.89.0.0/24")
	defer e.must("network", "rm", "web")

	before := e.world(pod)
	for _, args := range [][]string{
		{"--dry-run", "gc"},
		{"--dry-run", "stop", "x"},
		{"--explain", "run", "-d", "--network", "web", "--", "sleep", "1"},
		{"--dry-run", "attach", "--netns", pod.Path, "--name", "x", "--network", "web", "--ingress-rate", "1M"},
	} {
		r := e.ctnet(args...)
		if r.Code == 0 || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 || !strings.Contains(r.Stderr, args[0]) {
			t.Errorf("ctnet %s: %s; want a failure, in one line naming %s", strings.Join(args, " "), r, args[0])
		}
	}
	bad := []string{"attach", "--netns", pod.Path, "--name", "x", "--network", "web", "--ip", "10.99.0.5"}
	dry := e.ctnet(append([]string{"--dry-run"}, bad...)...)
	if diff := before.Diff(e.world(pod)); diff != "" {
		t.Fatalf("refused dry runs changed the host:\n%s", diff)
	}
	real := e.ctnet(bad...)
	if real.Code == 0 || dry.Code != real.Code || dry.Stderr != real.Stderr {
		t.Errorf("a bad attach: --dry-run gave %s, the real command %s; want the same failure", dry, real)
	}
	// The positive control: the same attach with a good address succeeds in a dry run.
	if r := e.ctnet("--dry-run", "attach", "--netns", pod.Path, "--name", "x", "--network", "web", "--ip", "10.89.0.5"); r.Code != 0 {
		t.Errorf("a good attach's dry run: %s", r)
	}
}

// world is what a dry run must leave as it was: the host's and the pod's kernel
// state as the e2e snapshot records it, and the store as ctnet lists it and as its
// file holds it.
func (e *env) world(pod *lab.Sandbox) lab.Snapshot {
	e.t.Helper()
	w := e.host.Snapshot(e.t, e.root)
	for k, v := range pod.Snapshot(e.t, e.root) {
		w["pod "+k] = v
	}
	fwd, err := e.host.Try("cat", "/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		e.t.Fatal(err)
	}
	w["IPv4 forwarding"] = fwd
	w["ctnet ps -a"] = e.must("ps", "-a", "--format", "json") // the table's times are relative to now
	w["ctnet network ls"] = e.must("network", "ls", "--format", "json")
	db, err := os.ReadFile(filepath.Join(e.root, "state.db"))
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	w["state.db"] = fmt.Sprintf("%x", db)
	var files []string
	filepath.WalkDir(e.root, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Name() != "lock" {
			files = append(files, path)
		}
		return nil
	})
	w["files under root"] = strings.Join(files, "\n")
	return w
}

// idsOf maps the ID of the network's or container's alias in a dry run's lines
// to the ID the real command drew, with the host veth's name that derives from it.
func idsOf(t *testing.T, lines, kind, real string) map[string]string {
	t.Helper()
	m := regexp.MustCompile(`ctnet:` + kind + `:([0-9a-f]{64})`).FindStringSubmatch(lines)
	if m == nil || len(real) != 64 {
		t.Fatalf("no %s alias in the dry run's lines, or no ID %q from the real command:\n%s", kind, real, lines)
	}
	return map[string]string{m[1]: real, "vc" + m[1][:8]: "vc" + real[:8], m[1][:12]: real[:12]}
}

func replaceIDs(s string, ids map[string]string) string {
	keys := make([]string, 0, len(ids))
	for k := range ids {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) }) // the whole ID before its prefixes
	for _, k := range keys {
		s = strings.ReplaceAll(s, k, ids[k])
	}
	return s
}

// replay runs the lines with bash in the sandbox, stopping at the first failure.
func replay(t *testing.T, sb *lab.Sandbox, lines string) {
	t.Helper()
	cmd := sb.Command(t.Context(), "bash", "-e", "-x")
	cmd.Stdin = strings.NewReader(lines)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("replaying the lines in %s: %v\n%s", sb.Name, err, out)
	}
}

// kernelFacts describes the named links of a namespace as iproute2 and sysctl show
// them — kind, master, state, MTU, group, alias, hairpin, the MAC of all but host
// veths (whose MAC the kernel draws), addresses, routes through them — and with
// routes all of the namespace's routes.
func kernelFacts(t *testing.T, sb *lab.Sandbox, names []string, routes bool) string {
	t.Helper()
	var out []string
	for _, name := range names {
		raw, err := sb.Try("ip", "-j", "-d", "addr", "show", "dev", name)
		if err != nil {
			if strings.Contains(raw, "does not exist") {
				out = append(out, name+" absent")
				continue
			}
			t.Fatalf("ip addr show dev %s in %s: %v: %s", name, sb.Name, err, raw)
		}
		var links []struct {
			Name     string `json:"ifname"`
			MTU      int    `json:"mtu"`
			State    string `json:"operstate"`
			Group    string `json:"group"`
			Alias    string `json:"ifalias"`
			Address  string `json:"address"`
			Master   string `json:"master"`
			Flags    []string
			LinkInfo struct {
				Kind      string         `json:"info_kind"`
				SlaveData map[string]any `json:"info_slave_data"`
			} `json:"linkinfo"`
			Addrs []struct {
				Family    string `json:"family"`
				Local     string `json:"local"`
				Prefix    int    `json:"prefixlen"`
				Broadcast string `json:"broadcast"`
				Scope     string `json:"scope"`
			} `json:"addr_info"`
		}
		if err := json.Unmarshal([]byte(raw), &links); err != nil || len(links) != 1 {
			t.Fatalf("ip -j addr show dev %s: %v: %s", name, err, raw)
		}
		l := links[0]
		mac := l.Address
		if l.LinkInfo.Kind == "veth" && l.Master != "" {
			mac = "(the kernel's)"
		}
		out = append(out, fmt.Sprintf("%s %s master %s state %s mtu %d group %s alias %q mac %s flags %v hairpin %v",
			l.Name, l.LinkInfo.Kind, l.Master, l.State, l.MTU, l.Group, l.Alias, mac, l.Flags, l.LinkInfo.SlaveData["hairpin"]))
		for _, a := range l.Addrs {
			if a.Scope == "link" {
				continue // IPv6 link-local: appears when the link has a carrier, on its own time
			}
			out = append(out, fmt.Sprintf("  %s %s/%d brd %s scope %s", a.Family, a.Local, a.Prefix, a.Broadcast, a.Scope))
		}
		for _, key := range []string{"ipv6/conf/" + name + "/disable_ipv6", "ipv4/conf/" + name + "/route_localnet"} {
			v, _ := sb.Try("cat", "/proc/sys/net/"+key)
			out = append(out, "  "+key+" = "+strings.TrimSpace(v))
		}
		if !routes {
			r, _ := sb.Try("ip", "route", "show", "dev", name)
			out = append(out, "  routes: "+strings.TrimSpace(r))
		}
	}
	if routes {
		for _, family := range []string{"-4", "-6"} {
			r, err := sb.Try("ip", family, "route", "show", "table", "all")
			if err != nil {
				t.Fatalf("ip route in %s: %v: %s", sb.Name, err, r)
			}
			out = append(out, "routes "+family+":\n"+r)
		}
	}
	fwd, _ := sb.Try("cat", "/proc/sys/net/ipv4/ip_forward")
	out = append(out, "ip_forward = "+strings.TrimSpace(fwd))
	return strings.Join(out, "\n")
}

// ruleset is nft list ruleset in the sandbox with sets' elements sorted; the rules
// that a rebuild's lines leave as comments (nft cannot read them back) are taken
// out, after a check that the kernel holds them as the comment says.
func ruleset(t *testing.T, sb *lab.Sandbox, lines string) string {
	t.Helper()
	out, err := sb.Try("nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset in %s: %v: %s", sb.Name, err, out)
	}
	for _, line := range strings.Split(lines, "\n") {
		rule, ok := strings.CutPrefix(strings.TrimSpace(line), "# "+firewall.UnreadableRule+": ")
		if !ok {
			continue
		}
		if !strings.Contains(out, "\t\t"+rule+"\n") {
			t.Errorf("the kernel does not hold the rule the lines show as a comment: %s", rule)
		}
		out = strings.Replace(out, "\t\t"+rule+"\n", "", 1)
	}
	return sortedElements(out)
}

var elementsBlock = regexp.MustCompile(`elements = \{([^}]*)\}`)

func sortedElements(ruleset string) string {
	return elementsBlock.ReplaceAllStringFunc(ruleset, func(block string) string {
		var els []string
		for _, e := range strings.Split(elementsBlock.FindStringSubmatch(block)[1], ",") {
			els = append(els, strings.TrimSpace(e))
		}
		slices.Sort(els)
		return "elements = { " + strings.Join(els, ", ") + " }"
	})
}

// lineDiff lists the lines only one of a and b has.
func lineDiff(a, b string) string {
	var out []string
	bl, al := strings.Split(b, "\n"), strings.Split(a, "\n")
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
