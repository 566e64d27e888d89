package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/proc"
)

// The reliability tests (gc, crashes, reboots, concurrency, soak) compare what the
// store says, read through the CLI, with what the kernel holds, read with iproute2
// and nft. The helpers here do both readings.

// storeNetwork is the part of `ctnet network ls --format json` the checks read.
type storeNetwork struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Bridge     string `json:"bridge"`
	Subnet     string `json:"subnet"`
	Gateway    string `json:"gateway"`
	Subnet6    string `json:"subnet6"`
	Gateway6   string `json:"gateway6"`
	Internal   bool   `json:"internal"`
	Masquerade bool   `json:"masquerade"`
	Driver     string `json:"driver"`
}

func (n storeNetwork) macvlan() bool { return n.Driver == "macvlan" }

// bridgeNetworks counts the networks with a bridge, which need the firewall and
// forwarding.
func (s storeState) bridgeNetworks() int {
	count := 0
	for _, n := range s.Networks {
		if !n.macvlan() {
			count++
		}
	}
	return count
}

// storeContainer is the part of `ctnet ps -a --format json` the checks read.
type storeContainer struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	State     string `json:"state"`
	Mode      string `json:"mode"`
	NetNS     string `json:"netns"`
	OwnsNetNS bool   `json:"owns_netns"`
	Networks  []struct {
		Network   string `json:"network"`
		NetworkID string `json:"network_id"`
		Interface string `json:"interface"`
		HostVeth  string `json:"host_veth"`
		IP        string `json:"ip"`
		PrefixLen int    `json:"prefix_len"`
		Gateway   string `json:"gateway"`
		MAC       string `json:"mac"`
		IFB       string `json:"ifb"`
		IP6       string `json:"ip6"`
	} `json:"networks"`
	Ports []struct {
		HostIP        string `json:"host_ip"`
		HostPort      int    `json:"host_port"`
		ContainerIP   string `json:"container_ip"`
		ContainerPort int    `json:"container_port"`
		Proto         string `json:"proto"`
	} `json:"ports"`
	Process struct {
		PID int `json:"pid"`
	} `json:"process"`
	Supervisor struct {
		PID int `json:"pid"`
	} `json:"supervisor"`
}

// storeState is what the store says, through the CLI; raw is the CLI's JSON, for
// comparing two readings.
type storeState struct {
	Networks   []storeNetwork
	Containers []storeContainer
	raw        string
}

func (e *env) store() storeState {
	e.t.Helper()
	var s storeState
	ps := e.must("ps", "-a", "--format", "json")
	ls := e.must("network", "ls", "--format", "json")
	e.decode(ps, &s.Containers)
	e.decode(ls, &s.Networks)
	s.raw = "containers:\n" + ps + "networks:\n" + ls
	return s
}

func (s storeState) container(name string) (storeContainer, bool) {
	for _, c := range s.Containers {
		if c.Name == name {
			return c, true
		}
	}
	return storeContainer{}, false
}

// hostLink is one link of `ip -j -d addr` in the sandbox.
type hostLink struct {
	Name     string   `json:"ifname"`
	Alias    string   `json:"ifalias"`
	Group    string   `json:"group"`
	Master   string   `json:"master"`
	Address  string   `json:"address"` // the MAC
	Flags    []string `json:"flags"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
	Addrs []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
	} `json:"addr_info"`
}

func (l hostLink) hasAddr(cidr string) bool {
	for _, a := range l.Addrs {
		if fmt.Sprintf("%s/%d", a.Local, a.PrefixLen) == cidr {
			return true
		}
	}
	return false
}

// ipv4 lists the link's IPv4 addresses as "address/prefix length".
func (l hostLink) ipv4() []string {
	var out []string
	for _, a := range l.Addrs {
		if a.Family == "inet" {
			out = append(out, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
		}
	}
	slices.Sort(out)
	return out
}

func (l hostLink) up() bool { return slices.Contains(l.Flags, "UP") }

// ctnetGroup is the device group ctnet gives the links it creates (link.Group).
const ctnetGroup = "1668574836"

// ctnets reports whether the link is ctnet's by its tag or by its group.
// retiredGroup is the device group of links a removal took out of service and
// handed on for deletion (link.RetiredGroup): no longer ctnet's, only on their way
// out, which gc completes without a report line if the deleting process died.
const retiredGroup = "1668574840"

func (l hostLink) ctnets() bool {
	return l.Group != retiredGroup && (strings.HasPrefix(l.Alias, "ctnet:") || l.Group == ctnetGroup)
}

// linksIn reads the links of a namespace (the sandbox for prefix nil) with iproute2.
func (e *env) linksIn(prefix []string) map[string]hostLink {
	e.t.Helper()
	if prefix == nil {
		e.host.AwaitDyingVeths(e.t)
	}
	out := e.output(append(prefix, "ip", "-j", "-d", "addr", "show")...)
	var links []hostLink
	e.decode(out, &links)
	m := map[string]hostLink{}
	for _, l := range links {
		m[l.Name] = l
	}
	return m
}

// output runs a command in the sandbox and returns its standard output; what it
// says on standard error is ignored (ip complains there when a namespace it looks
// at is being removed by someone else), a failure is fatal.
func (e *env) output(args ...string) string {
	e.t.Helper()
	var stderr bytes.Buffer
	cmd := e.host.Command(e.t.Context(), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("%s: %v: %s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// nftElements lists the elements of every set and map of ctnet's tables as nft
// prints them in JSON, as "family set: element"; tables lists the tables.
func (e *env) nftElements() (tables []string, elements map[string]bool) {
	e.t.Helper()
	out := e.output("nft", "-j", "list", "ruleset")
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	e.decode(out, &doc)
	elements = map[string]bool{}
	for _, obj := range doc.Nftables {
		if raw, ok := obj["table"]; ok {
			var tbl struct{ Family, Name string }
			e.decode(string(raw), &tbl)
			if tbl.Name == "ctnet" {
				tables = append(tables, tbl.Family+" ctnet")
			}
		}
		for _, kind := range []string{"set", "map"} {
			raw, ok := obj[kind]
			if !ok {
				continue
			}
			var set struct {
				Family, Table, Name string
				Elem                []any
			}
			e.decode(string(raw), &set)
			if set.Table != "ctnet" {
				continue
			}
			for _, el := range set.Elem {
				elements[set.Family+" "+set.Name+": "+nftText(el)] = true
			}
		}
	}
	slices.Sort(tables)
	return tables, elements
}

// nftText renders an element of nft's JSON output the way nft's text output does.
func nftText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return fmt.Sprint(v)
	case []any: // a map element: key and value
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = nftText(p)
		}
		return strings.Join(parts, " : ")
	case map[string]any:
		switch {
		case v["concat"] != nil:
			var parts []string
			for _, p := range v["concat"].([]any) {
				parts = append(parts, nftText(p))
			}
			return strings.Join(parts, " . ")
		case v["prefix"] != nil:
			p := v["prefix"].(map[string]any)
			return fmt.Sprintf("%s/%v", nftText(p["addr"]), p["len"])
		case v["range"] != nil:
			r := v["range"].([]any)
			return nftText(r[0]) + "-" + nftText(r[1])
		case v["elem"] != nil:
			el := v["elem"].(map[string]any)
			if c, ok := el["comment"].(string); ok {
				return fmt.Sprintf("%s comment %q", nftText(el["val"]), c)
			}
			return nftText(el["val"])
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// namespacesUnderRoot lists ctnet's namespace files and the mounts that pin them.
// The directory that holds them is a mount point of its own exactly while it holds
// any; otherwise the test fails.
func (e *env) namespacesUnderRoot() (files, mounts []string) {
	dir := filepath.Join(e.root, "netns")
	entries, _ := os.ReadDir(dir)
	for _, ent := range entries {
		files = append(files, filepath.Join(dir, ent.Name()))
	}
	dirMounted := false
	for _, m := range e.host.MountsUnder(e.t, e.root) {
		if m == dir {
			dirMounted = true
		} else {
			mounts = append(mounts, m)
		}
	}
	if dirMounted != (len(files) > 0) {
		e.t.Errorf("%s is a mount point: %v, while it holds %d namespaces; want a mount point exactly while it holds any", dir, dirMounted, len(files))
	}
	slices.Sort(mounts)
	return files, mounts
}

// checkConsistent fails the test unless the kernel holds exactly what the store
// describes: for every network a bridge with its gateway address and the network's
// tag; for every live container a veth into its network's bridge, inside its
// namespace each interface with its MAC and exactly its address, exactly the default
// route its attachments give (via the gateway on eth0, none on an internal network),
// and its namespace pinned under the root; no other link tagged as ctnet's and nothing
// else under the root; every set and map of tables inet ctnet and bridge ctnet holding
// exactly the elements the store's networks, containers and ports make (no tables
// without networks); IPv4 forwarding on exactly while there are networks (every
// sandbox starts with it off).
func (e *env) checkConsistent(t *testing.T) {
	t.Helper()
	st := e.store()
	links := e.linksIn(nil)
	wantAlias := map[string]string{} // link name → tag
	networks := map[string]storeNetwork{}
	for _, n := range st.Networks {
		networks[n.ID] = n
		if n.macvlan() {
			continue
		}
		wantAlias[n.Bridge] = "ctnet:network:" + n.ID
		l, ok := links[n.Bridge]
		switch {
		case !ok:
			t.Errorf("network %s: its bridge %s is missing", n.Name, n.Bridge)
			continue
		case l.LinkInfo.Kind != "bridge" || !l.up():
			t.Errorf("network %s: %s is a %q link, up=%t: want an up bridge", n.Name, n.Bridge, l.LinkInfo.Kind, l.up())
		}
		for _, family := range []struct{ subnet, gateway string }{{n.Subnet, n.Gateway}, {n.Subnet6, n.Gateway6}} {
			if family.subnet == "" {
				continue
			}
			subnet, err := netip.ParsePrefix(family.subnet)
			if err != nil {
				t.Fatalf("network %s: subnet %q: %v", n.Name, family.subnet, err)
			}
			if gw := fmt.Sprintf("%s/%d", family.gateway, subnet.Bits()); !l.hasAddr(gw) {
				t.Errorf("network %s: bridge %s lacks the gateway address %s", n.Name, n.Bridge, gw)
			}
		}
	}
	var wantNS []string
	for _, c := range st.Containers {
		if c.State == "exited" {
			continue
		}
		if c.OwnsNetNS {
			wantNS = append(wantNS, c.NetNS)
		}
		if c.Mode != "bridge" && !(c.Mode == "none" && c.OwnsNetNS) {
			continue
		}
		prefix := lab.InNetNS(c.NetNS)
		inside := e.linksIn(prefix)
		var wantDefault []string
		for _, a := range c.Networks {
			if networks[a.NetworkID].macvlan() {
				if iface, ok := inside[a.Interface]; !ok || iface.LinkInfo.Kind != "macvlan" {
					t.Errorf("container %s: its macvlan %s is missing inside", c.Name, a.Interface)
				}
				if a.Interface == "eth0" {
					wantDefault = append(wantDefault, "via "+a.Gateway+" dev eth0")
				}
				continue
			}
			wantAlias[a.HostVeth] = "ctnet:container:" + c.ID
			if a.IFB != "" {
				wantAlias[a.IFB] = "ctnet:container:" + c.ID
				if l, ok := links[a.IFB]; !ok || l.LinkInfo.Kind != "ifb" || !l.up() {
					t.Errorf("container %s: its ifb %s is missing, or not an up ifb", c.Name, a.IFB)
				}
			}
			l, ok := links[a.HostVeth]
			switch {
			case !ok:
				t.Errorf("container %s: its veth %s is missing", c.Name, a.HostVeth)
			case l.Master != networks[a.NetworkID].Bridge || !l.up():
				t.Errorf("container %s: veth %s has master %q, up=%t: want an up port of %q", c.Name, a.HostVeth, l.Master, l.up(), networks[a.NetworkID].Bridge)
			}
			iface, ok := inside[a.Interface]
			if !ok {
				t.Errorf("container %s: %s is missing inside", c.Name, a.Interface)
				continue
			}
			if got, want := iface.ipv4(), fmt.Sprintf("%s/%d", a.IP, a.PrefixLen); a.IP != "" && !slices.Equal(got, []string{want}) {
				t.Errorf("container %s: %s inside holds %v, want %s", c.Name, a.Interface, got, want)
			}
			if a.IP6 != "" && !iface.hasAddr(fmt.Sprintf("%s/%d", a.IP6, netip.MustParsePrefix(networks[a.NetworkID].Subnet6).Bits())) {
				t.Errorf("container %s: %s inside lacks its IPv6 address %s", c.Name, a.Interface, a.IP6)
			}
			if iface.Address != a.MAC {
				t.Errorf("container %s: %s inside has the MAC %s, want %s", c.Name, a.Interface, iface.Address, a.MAC)
			}
			if a.Interface == "eth0" && !networks[a.NetworkID].Internal {
				wantDefault = append(wantDefault, "via "+a.Gateway+" dev eth0")
			}
		}
		if got := e.defaultRoutes(prefix); !slices.Equal(got, wantDefault) {
			t.Errorf("container %s: default routes inside %v, want %v", c.Name, got, wantDefault)
		}
	}
	for name, l := range links {
		if l.ctnets() && wantAlias[name] != l.Alias {
			t.Errorf("interface %s (tag %q, group %s) is not the store's", name, l.Alias, l.Group)
		}
	}
	for name, alias := range wantAlias {
		if l, ok := links[name]; ok && l.Alias != alias {
			t.Errorf("interface %s is tagged %q, want %q", name, l.Alias, alias)
		}
	}
	slices.Sort(wantNS)
	files, mounts := e.namespacesUnderRoot()
	if !slices.Equal(files, wantNS) || !slices.Equal(mounts, wantNS) {
		t.Errorf("namespaces under the root: files %v, mounts %v; the store's live containers own %v", files, mounts, wantNS)
	}
	tables, elements := e.nftElements()
	if st.bridgeNetworks() == 0 {
		if len(tables) > 0 {
			t.Errorf("firewall tables %v remain without networks", tables)
		}
	} else {
		if !slices.Equal(tables, []string{"bridge ctnet", "inet ctnet"}) {
			t.Errorf("firewall tables %v, want bridge ctnet and inet ctnet", tables)
		}
		want := e.wantElements(st)
		// The rules version is the binary's own; here it only has to be recorded.
		versions := slices.Collect(func(yield func(string) bool) {
			for el := range elements {
				if rulesVersionElement.MatchString(el) && !yield(el) {
					return
				}
			}
		})
		if len(versions) != 1 {
			t.Errorf("the owner set records %d rules versions, want 1: %v", len(versions), versions)
		}
		for _, el := range versions {
			want[el] = true
		}
		for _, el := range slices.Sorted(maps.Keys(symmetricDiff(want, elements))) {
			if want[el] {
				t.Errorf("firewall element missing: %s", el)
			} else {
				t.Errorf("firewall element the store does not describe: %s", el)
			}
		}
	}
	wantForward := "0"
	if st.bridgeNetworks() > 0 {
		wantForward = "1"
	}
	if out, _ := e.hostRun("sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != wantForward {
		t.Errorf("net.ipv4.ip_forward is %s with %d networks, want %s", strings.TrimSpace(out), len(st.Networks), wantForward)
	}
	wantForward6 := "0"
	if slices.ContainsFunc(st.Networks, func(n storeNetwork) bool { return n.Subnet6 != "" }) {
		wantForward6 = "1"
	}
	if out, _ := e.hostRun("sysctl", "-n", "net.ipv6.conf.all.forwarding"); strings.TrimSpace(out) != wantForward6 {
		t.Errorf("net.ipv6.conf.all.forwarding is %s, want %s", strings.TrimSpace(out), wantForward6)
	}
}

// rulesVersionElement is how nftElements shows the owner set's record of the rules
// version the tables were built with.
var rulesVersionElement = regexp.MustCompile(`^inet owner: rules comment "[0-9a-f]{12}"$`)

// wantElements is every element of ctnet's sets and maps as the store describes
// them, in nftElements' form: the owner; per network its bridge, the bridge paired
// with itself, its subnet on its bridge, and either the internal mark or, when it
// masquerades, its subnet and bridge for NAT; per live container on bridge networks
// each interface's port, MAC and address on its host veth, and each published port.
func (e *env) wantElements(st storeState) map[string]bool {
	want := map[string]bool{}
	add := func(family, set, element string) { want[family+" "+set+": "+element] = true }
	add("inet", "owner", fmt.Sprintf("root comment %q", e.root))
	for _, n := range st.Networks {
		if n.macvlan() {
			continue
		}
		add("inet", "bridges", n.Bridge)
		add("inet", "same_bridge", n.Bridge+" . "+n.Bridge)
		for _, family := range []struct{ subnet, suffix string }{{n.Subnet, ""}, {n.Subnet6, "6"}} {
			if family.subnet == "" {
				continue
			}
			subnet := netip.MustParsePrefix(family.subnet).Masked().String() + " . " + n.Bridge
			add("inet", "subnets"+family.suffix, subnet)
			if n.Masquerade && !n.Internal {
				add("inet", "masq_subnets"+family.suffix, subnet)
			}
		}
		switch {
		case n.Internal:
			add("inet", "internal", n.Bridge)
		case n.Masquerade:
			add("inet", "nat_bridges", n.Bridge)
		}
	}
	for _, c := range st.Containers {
		if c.State == "exited" || c.Mode != "bridge" {
			continue
		}
		for _, a := range c.Networks {
			if a.HostVeth == "" {
				continue // macvlan
			}
			add("bridge", "ports", a.HostVeth)
			add("bridge", "port_macs", a.HostVeth+" . "+a.MAC)
			if a.IP != "" {
				add("bridge", "port_ips", a.HostVeth+" . "+a.IP)
			}
			if a.IP6 != "" {
				add("bridge", "port_ips6", a.HostVeth+" . "+a.IP6)
				add("bridge", "port_ips6", a.HostVeth+" . "+linkLocal(e.t, a.MAC))
			}
		}
		for _, p := range c.Ports {
			target := fmt.Sprintf("%s . %d", p.ContainerIP, p.ContainerPort)
			suffix := ""
			if strings.Contains(p.ContainerIP, ":") {
				suffix = "6"
			}
			if p.HostIP == "" || p.HostIP == "0.0.0.0" || p.HostIP == "::" {
				add("inet", "ports_any"+suffix, fmt.Sprintf("%s . %d : %s", p.Proto, p.HostPort, target))
			} else {
				add("inet", "ports"+suffix, fmt.Sprintf("%s . %s . %d : %s", p.HostIP, p.Proto, p.HostPort, target))
			}
		}
	}
	return want
}

// defaultRoutes reads the default routes of a namespace with iproute2, as
// "via GATEWAY dev INTERFACE".
func (e *env) defaultRoutes(prefix []string) []string {
	e.t.Helper()
	var routes []struct {
		Gateway string `json:"gateway"`
		Dev     string `json:"dev"`
	}
	e.decode(e.output(append(prefix, "ip", "-j", "-4", "route", "show", "default")...), &routes)
	var out []string
	for _, r := range routes {
		out = append(out, "via "+r.Gateway+" dev "+r.Dev)
	}
	slices.Sort(out)
	return out
}

// gc runs `ctnet gc` and returns its report, one entry per line.
func (e *env) gc() []string {
	e.t.Helper()
	r := e.ctnet("gc")
	if r.Code != 0 || r.Stderr != "" {
		e.t.Fatalf("ctnet gc: %s", r)
	}
	return lines(r.Stdout)
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// kernelObjects are ctnet's objects in the sandbox, each keyed by how a gc report
// line names it: links (tagged, or of ctnet's group) by name, namespaces by path, firewall tables as
// "table FAMILY ctnet", and set elements (counted, not named: a line describes its
// element as nft would).
type kernelObjects struct {
	named    map[string]bool // links and namespaces
	tables   []string
	elements map[string]bool
}

func (e *env) kernelObjects() kernelObjects {
	e.t.Helper()
	k := kernelObjects{named: map[string]bool{}}
	for name, l := range e.linksIn(nil) {
		if l.ctnets() {
			k.named[name] = true
		}
	}
	files, mounts := e.namespacesUnderRoot()
	for _, p := range append(files, mounts...) {
		k.named[p] = true
	}
	k.tables, k.elements = e.nftElements()
	return k
}

// checkReport checks a gc report against what changed in the kernel while gc ran:
// every link and namespace that came or went is named by exactly one line (besides
// lines about firewall elements, which may name a bridge or veth too), a table
// that came or went by at least one, and there are as many lines about firewall
// elements as elements that came or went in tables that stayed. Lines are distinct
// and each is about one thing (no lists joined with ";").
func checkReport(t *testing.T, report []string, before, after kernelObjects) {
	t.Helper()
	seen := map[string]bool{}
	for _, l := range report {
		if seen[l] {
			t.Errorf("gc report repeats the line %q", l)
		}
		seen[l] = true
		if strings.Contains(l, ";") {
			t.Errorf("gc report line %q is about several objects: want one line per object", l)
		}
	}
	for name := range symmetricDiff(before.named, after.named) {
		re := regexp.MustCompile(`(^|[^\w./-])` + regexp.QuoteMeta(name) + `($|[^\w/-])`)
		n := 0
		for _, l := range report {
			if re.MatchString(l) && !strings.Contains(l, "firewall element") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("gc changed %s: %d report lines name it, want 1:\n%s", name, n, strings.Join(report, "\n"))
		}
	}
	for _, tbl := range symmetricDiffList(before.tables, after.tables) {
		if !slices.ContainsFunc(report, func(l string) bool { return strings.Contains(l, "table "+tbl) }) {
			t.Errorf("gc added or removed firewall table %s: no report line says so:\n%s", tbl, strings.Join(report, "\n"))
		}
	}
	changed := 0
	for el := range symmetricDiff(before.elements, after.elements) {
		family := strings.Fields(el)[0]
		if slices.Contains(before.tables, family+" ctnet") && slices.Contains(after.tables, family+" ctnet") {
			changed++
		}
	}
	elementLines := 0
	for _, l := range report {
		if strings.Contains(l, "firewall element") {
			elementLines++
		}
	}
	if elementLines != changed {
		t.Errorf("gc changed %d firewall elements, the report has %d lines about elements:\n%s", changed, elementLines, strings.Join(report, "\n"))
	}
}

func symmetricDiff(a, b map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		if !b[k] {
			out[k] = true
		}
	}
	for k := range b {
		if !a[k] {
			out[k] = true
		}
	}
	return out
}

func symmetricDiffList(a, b []string) []string {
	am, bm := map[string]bool{}, map[string]bool{}
	for _, x := range a {
		am[x] = true
	}
	for _, x := range b {
		bm[x] = true
	}
	var out []string
	for k := range symmetricDiff(am, bm) {
		out = append(out, k)
	}
	return out
}

// killContainer kills a detached container's process and its supervisor behind
// ctnet's back, as a crash or a reboot would, and waits until both are gone.
func (e *env) killContainer(name string) {
	e.t.Helper()
	c := e.inspect(name)
	for _, pid := range []int{c.Supervisor.PID, c.Process.PID} {
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if !eventually(func() bool { return !proc.Running(c.Supervisor.PID) && !proc.Running(c.Process.PID) }) {
		e.t.Fatalf("container %s: processes %d and %d survive SIGKILL", name, c.Supervisor.PID, c.Process.PID)
	}
}

// waitGone waits for a process to end.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for pid > 0 && proc.Running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d does not end", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kernelState describes the sandbox as ctnet may change it, without what differs
// between two equal configurations built at different times: interface indexes,
// MAC addresses the kernel picks for host veth ends, offload limits a bridge inherits from the
// ports it had, the order of links and of set elements. It covers the host's links
// with their addresses, its routes, the nft ruleset, IPv4 forwarding, ctnet's
// namespaces under the root and, inside each, its links and routes.
func (e *env) kernelState() lab.Snapshot {
	e.t.Helper()
	s := lab.Snapshot{}
	describe := func(prefix []string) (links, routes string) {
		var ls []string
		for _, l := range e.linksIn(prefix) {
			ls = append(ls, fmt.Sprintf("%s kind=%s master=%s alias=%s up=%t addrs=%v", l.Name, l.LinkInfo.Kind, l.Master, l.Alias, l.up(), l.ipv4()))
		}
		slices.Sort(ls)
		out := e.output(append(prefix, "ip", "-4", "route", "show", "table", "all")...)
		rs := lines(strings.ReplaceAll(out, " linkdown", ""))
		slices.Sort(rs)
		return strings.Join(ls, "\n"), strings.Join(rs, "\n")
	}
	s["links"], s["routes"] = describe(nil)
	snap := e.host.Snapshot(e.t, e.root)
	for _, k := range []string{"nft", "namespaces under root", "mounts under root"} {
		s[k] = snap[k]
	}
	fwd, _ := e.hostRun("sysctl", "-n", "net.ipv4.ip_forward")
	s["ip_forward"] = strings.TrimSpace(fwd)
	files, _ := e.namespacesUnderRoot()
	for _, f := range files {
		links, routes := describe(lab.InNetNS(f))
		s["inside "+filepath.Base(f)] = links + "\n" + routes
	}
	return s
}
