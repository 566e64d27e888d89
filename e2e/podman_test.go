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
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/lab"
)

// podman is Debian's Podman 4.3 with the CNI backend, run in the sandbox's host
// namespace with a configuration, storage and state of its own: its containers.conf
// (CONTAINERS_CONF) names the plugin directory with ctnet-cni installed as ctnet and
// a network configuration directory with README's configuration, storage is vfs under
// the test's directory, and the fixed paths it keeps state in are a private mount
// namespace's. Containers run read-only on a busybox root filesystem, so no image is
// pulled and they share it unchanged.
type podman struct {
	t      *testing.T
	e      *env
	dir    string
	mounts *lab.PrivateMounts
	rootfs string
	// cgroupParent holds the containers' cgroups (and conmon's), removed at cleanup.
	cgroupParent string
}

func newPodman(t *testing.T, e *env) *podman {
	t.Helper()
	for _, tool := range []string{"podman", "conmon", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			lab.Missing(t, "needs %s (Debian's podman)", tool)
		}
	}
	p := &podman{t: t, e: e, dir: t.TempDir(), rootfs: lab.BusyboxRootfs(t), cgroupParent: "/" + lab.RandomName("ctnet-podman-")}
	for _, d := range []string{"cni", "net.d", "root", "runroot", "tmp"} {
		if err := os.Mkdir(filepath.Join(p.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(lab.CNIPlugin(t), filepath.Join(p.dir, "cni", "ctnet")); err != nil {
		t.Fatal(err)
	}
	// Podman refuses to start a container whose default limits exceed the hard ones.
	var nofile, nproc unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
	unix.Getrlimit(unix.RLIMIT_NPROC, &nproc)
	limit := func(r unix.Rlimit) uint64 { return min(r.Max, 1024) }
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%[1]d:%[1]d", "nproc=%[2]d:%[2]d"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = [%[3]q, "/usr/lib/cni"]
network_config_dir = %[4]q

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = %[5]q
`, limit(nofile), limit(nproc), filepath.Join(p.dir, "cni"), filepath.Join(p.dir, "net.d"), filepath.Join(p.dir, "tmp"))
	if err := os.WriteFile(filepath.Join(p.dir, "containers.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p.mounts = lab.NewPrivateMounts(t, "/run", "/var/lib", "/dev/shm")
	t.Cleanup(p.cleanup)
	return p
}

// readmeCNIConfig is the configuration list named name that README's "As a CNI
// plugin" section gives, as a file it writes into /etc/cni/net.d or as a JSON block,
// with the test's ctnet root added to ctnet's entry: tests run README's
// configurations, not copies of them.
func readmeCNIConfig(t *testing.T, name, root string) map[string]any {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## As a CNI plugin\n")
	section, _, _ = strings.Cut(section, "\n## ")
	var names []string
	for _, m := range regexp.MustCompile("(?s)cat > /etc/cni/net\\.d/[^ ]+\\.conflist <<'EOF'\n(.*?)\nEOF\n|```json\n(.*?)\n```").FindAllStringSubmatch(section, -1) {
		var conf map[string]any
		if err := json.Unmarshal([]byte(m[1]+m[2]), &conf); err != nil {
			t.Fatalf("README's CNI configuration %s: %v", m[0], err)
		}
		if conf["name"] != name {
			names = append(names, fmt.Sprint(conf["name"]))
			continue
		}
		conf["plugins"].([]any)[0].(map[string]any)["root"] = root
		return conf
	}
	t.Fatalf("README's CNI section has no configuration named %s, only %v", name, names)
	return nil
}

// marshal is v as JSON.
func marshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// addNetwork writes a configuration list for Podman: README's, renamed and with
// another subnet unless name is README's own.
func (p *podman) addNetwork(name, subnet string) {
	p.t.Helper()
	conf := readmeCNIConfig(p.t, "ctnet", p.e.root)
	if name != conf["name"] {
		conf["name"] = name
		conf["plugins"].([]any)[0].(map[string]any)["subnet"] = subnet
	}
	if err := os.WriteFile(filepath.Join(p.dir, "net.d", name+".conflist"), []byte(marshal(p.t, conf)), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// run runs podman in the sandbox's host namespace and the private mount namespace.
func (p *podman) run(args ...string) lab.Result {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	global := []string{"--root", filepath.Join(p.dir, "root"), "--runroot", filepath.Join(p.dir, "runroot"), "--storage-driver", "vfs"}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + p.e.host.Path, "--mount=" + p.mounts.Path, "podman"}, append(global, args...)...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(p.dir, "containers.conf"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	r := lab.Result{}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			p.t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
		}
		r.Code = exit.ExitCode()
	}
	r.Stdout, r.Stderr = stdout.String(), stderr.String()
	return r
}

func (p *podman) must(args ...string) string {
	p.t.Helper()
	r := p.run(args...)
	if r.Code != 0 {
		p.t.Fatalf("podman %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// runWeb starts a detached container serving its name over HTTP on port 80.
func (p *podman) runWeb(name string, flags ...string) {
	p.t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--read-only", "--cgroup-parent", p.cgroupParent}, flags...)
	p.must(append(args, "--rootfs", p.rootfs, "sh", "-c", "echo "+name+" > /tmp/index.html && exec httpd -f -p 80 -h /tmp")...)
}

// in runs a command of the host's in a container's network namespace.
func (p *podman) in(name string) func(args ...string) (string, error) {
	pid := p.must("inspect", "--format", "{{.State.Pid}}", name)
	return func(args ...string) (string, error) {
		out, err := exec.Command("nsenter", append([]string{"--target", pid, "--net"}, args...)...).CombinedOutput()
		return string(out), err
	}
}

// cleanup removes every container and checks that Podman left no process, mount or
// cgroup behind.
func (p *podman) cleanup() {
	t := p.t
	if r := p.run("rm", "--all", "--force", "--time", "0"); r.Code != 0 {
		t.Errorf("podman rm --all: %s", r)
	}
	if !eventually(func() bool { return len(processesMentioning(p.dir)) == 0 }) {
		t.Errorf("processes of Podman left running: %v", processesMentioning(p.dir))
	}
	if mounts, err := exec.Command("nsenter", "--mount="+p.mounts.Path, "cat", "/proc/self/mountinfo").Output(); err != nil {
		t.Errorf("read the private mounts: %v", err)
	} else if left := linesContaining(string(mounts), p.dir); len(left) > 0 {
		t.Errorf("mounts left by Podman: %v", left)
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*" + p.cgroupParent)
	if own := "/sys/fs/cgroup" + p.cgroupParent; dirExists(own) {
		cgroups = append(cgroups, own)
	}
	for _, cg := range cgroups {
		// Deepest first: conmon's and the containers' below the parent.
		var dirs []string
		filepath.WalkDir(cg, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, d := range dirs {
			if err := os.Remove(d); err != nil {
				t.Errorf("remove cgroup %s: %v", d, err)
			}
		}
	}
}

func dirExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

func linesContaining(text, s string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// processesMentioning returns the PIDs of processes whose command line names path.
func processesMentioning(path string) []string {
	var out []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(path)) {
			out = append(out, strings.Split(f, "/")[2])
		}
	}
	return out
}

// addrOf is the IPv4 address (with its prefix) of a container's interface, as
// iproute2 reads it in the container's namespace.
func addrOf(t *testing.T, run func(args ...string) (string, error), ifname string) string {
	t.Helper()
	out, err := run("ip", "-4", "-o", "addr", "show", "dev", ifname)
	f := strings.Fields(out)
	if err != nil || len(f) < 4 {
		t.Fatalf("address of %s: %v: %s", ifname, err, out)
	}
	return f[3]
}

// publishedElements are the nft elements of the ctnet tables that mention the host
// port or the address.
func (e *env) publishedElements(port int, addr string) []string {
	_, elements := e.nftElements()
	var out []string
	for el := range elements {
		if strings.Contains(el, fmt.Sprintf(" %d ", port)) || strings.Contains(el, addr) {
			out = append(out, el)
		}
	}
	slices.Sort(out)
	return out
}

// Podman 4.3 runs a container on README's configuration: it gets an address on the
// network's subnet, reaches the wan, and its published port answers the wan and the
// host (the body is the container's, not conmon's, which holds the host port);
// podman network reload gives it the same address and port again while conmon holds
// the port; podman rm -f leaves no veth, record or nft element.
func TestPodmanPublishedPort(t *testing.T) {
	e := newEnv(t)
	p := newPodman(t, e)
	p.addNetwork("ctnet", "")
	p.runWeb("web", "--network", "ctnet", "-p", "8085:80")
	in := p.in("web")
	addr := addrOf(t, in, "eth0")
	if !strings.HasPrefix(addr, "10.90.") || !strings.HasSuffix(addr, "/16") {
		t.Errorf("eth0 holds %s, want an address of README's 10.90.0.0/16", addr)
	}
	if !pingOK(in, lab.WANIP) {
		t.Errorf("the container does not reach the wan")
	}
	ip, _, _ := strings.Cut(addr, "/")
	answers := func(when string) {
		t.Helper()
		for _, c := range []struct {
			from string
			run  func(args ...string) (string, error)
			addr string
		}{{"the wan", e.wanRun, lab.HostUplinkIP}, {"the host", e.hostRun, "127.0.0.1"}, {"the host", e.hostRun, lab.HostUplinkIP}} {
			if !eventually(func() bool { return httpGet(c.run, c.addr, 8085) == "web" }) {
				t.Errorf("%s: %s:8085 from %s does not reach the container", when, c.addr, c.from)
			}
		}
	}
	answers("after run")
	if ps := e.must("ps"); !strings.Contains(ps, "0.0.0.0:8085->80/tcp") {
		t.Errorf("ctnet ps does not show the published port:\n%s", ps)
	}
	if r := p.run("network", "reload", "web"); r.Code != 0 {
		t.Fatalf("podman network reload: %s", r)
	}
	if got := addrOf(t, in, "eth0"); got != addr {
		t.Errorf("after network reload eth0 holds %s, want %s as before", got, addr)
	}
	answers("after network reload")

	veths := func() []string { return ctnetVeths(e.linksIn(lab.InNetNS(e.host.Path))) }
	if len(veths()) != 1 || len(e.publishedElements(8085, ip)) == 0 {
		t.Fatalf("want one veth and the port's elements while the container runs, have %v and %v", veths(), e.publishedElements(8085, ip))
	}
	p.must("rm", "--force", "--time", "0", "web")
	if v := veths(); len(v) != 0 {
		t.Errorf("veths left after podman rm: %v", v)
	}
	if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) != 0 {
		t.Errorf("ctnet records left after podman rm: %v", ids)
	}
	if left := e.publishedElements(8085, ip); len(left) != 0 {
		t.Errorf("nft elements left after podman rm: %v", left)
	}
	e.must("network", "rm", "ctnet")
}

// podman run --ip and --mac-address, which Podman 4.3 sends as CNI_ARGS IP= and
// MAC=: the container holds both, reaches the wan with them (the bridge table lets a
// port send only with its recorded MAC), and keeps both through network reload.
func TestPodmanStaticAddress(t *testing.T) {
	e := newEnv(t)
	p := newPodman(t, e)
	p.addNetwork("ctnet", "")
	const ip, mac = "10.90.0.50", "02:00:0a:5a:00:50"
	p.runWeb("fixed", "--network", "ctnet", "--ip", ip, "--mac-address", mac, "-p", "8085:80")
	in := p.in("fixed")
	check := func(when string) {
		t.Helper()
		if got := addrOf(t, in, "eth0"); got != ip+"/16" {
			t.Errorf("%s: eth0 holds %s, want %s/16", when, got, ip)
		}
		if got := macOf(t, in, "eth0"); got != mac {
			t.Errorf("%s: eth0's MAC is %s, want %s", when, got, mac)
		}
		if !pingOK(in, lab.WANIP) {
			t.Errorf("%s: the container does not reach the wan", when)
		}
		if !eventually(func() bool { return httpGet(e.wanRun, lab.HostUplinkIP, 8085) == "fixed" }) {
			t.Errorf("%s: the published port does not answer the wan", when)
		}
	}
	check("after run")
	if r := p.run("network", "reload", "fixed"); r.Code != 0 {
		t.Fatalf("podman network reload: %s", r)
	}
	check("after network reload")
	p.must("rm", "--force", "--time", "0", "fixed")
	e.must("network", "rm", "ctnet")
}

// podman run --network a,b -p: Podman gives both networks the port mappings; the
// container gets an interface on each, and the port is published once, also after
// network reload.
func TestPodmanTwoNetworks(t *testing.T) {
	e := newEnv(t)
	p := newPodman(t, e)
	p.addNetwork("ctnet", "")
	p.addNetwork("ctnet2", "10.91.0.0/16")
	p.runWeb("both", "--network", "ctnet,ctnet2", "-p", "8085:80")
	in := p.in("both")
	// Podman 4.3 keeps a container's networks in a map, so which of them becomes eth0 is
	// its choice; each must get one interface.
	eth0, eth1 := addrOf(t, in, "eth0"), addrOf(t, in, "eth1")
	inOrder := strings.HasPrefix(eth0, "10.90.") && strings.HasPrefix(eth1, "10.91.")
	swapped := strings.HasPrefix(eth0, "10.91.") && strings.HasPrefix(eth1, "10.90.")
	if !inOrder && !swapped {
		t.Errorf("eth0 holds %s and eth1 %s, want one address of 10.90.0.0/16 and one of 10.91.0.0/16", eth0, eth1)
	}
	check := func(when string) {
		t.Helper()
		if !eventually(func() bool { return httpGet(e.wanRun, lab.HostUplinkIP, 8085) == "both" }) {
			t.Errorf("%s: the published port does not answer the wan", when)
		}
		var ports []string
		for _, el := range e.publishedElements(8085, "no address") {
			if strings.Contains(el, "ports") {
				ports = append(ports, el)
			}
		}
		if len(ports) != 1 {
			t.Errorf("%s: want the port published once, have %v", when, ports)
		}
	}
	check("after run")
	// Both networks again, each with the port mappings, while conmon holds the port.
	if r := p.run("network", "reload", "both"); r.Code != 0 {
		t.Fatalf("podman network reload: %s", r)
	}
	if got0, got1 := addrOf(t, in, "eth0"), addrOf(t, in, "eth1"); got0 != eth0 || got1 != eth1 {
		t.Errorf("after network reload eth0 holds %s and eth1 %s, want %s and %s as before", got0, got1, eth0, eth1)
	}
	check("after network reload")
	p.must("rm", "--force", "--time", "0", "both")
	e.must("network", "rm", "ctnet", "ctnet2")
}

// README's network beside Podman's own default one, which holds 10.88.0.0/16 on the
// same host (the reference bridge plugin's cni-podman0): a container on each gets
// an address of its own network and reaches the wan, and README's container's
// published port answers. ctnet's network on Podman's subnet is refused, naming the
// overlap, and nothing of it is made.
func TestPodmanDefaultNet(t *testing.T) {
	e := newEnv(t)
	p := newPodman(t, e)
	// What the reference plugins leave in the sandbox's host, after the containers:
	// the bridge plugin's bridge and the iptables tables of it and the firewall and
	// portmap plugins (iptables-nft).
	t.Cleanup(func() {
		if r := p.run("rm", "--all", "--force", "--time", "0"); r.Code != 0 {
			t.Errorf("podman rm --all: %s", r)
		}
		e.host.Try("ip", "link", "del", "cni-podman0")
		for _, table := range []string{"ip filter", "ip nat", "ip mangle", "ip6 filter", "ip6 nat", "ip6 mangle"} {
			e.host.Try(append([]string{"nft", "delete", "table"}, strings.Fields(table)...)...)
		}
	})
	p.addNetwork("ctnet", "")
	p.runWeb("native", "--network", "podman")
	p.runWeb("web", "--network", "ctnet", "-p", "8085:80")
	for _, c := range []struct{ name, prefix string }{{"native", "10.88."}, {"web", "10.90."}} {
		in := p.in(c.name)
		if addr := addrOf(t, in, "eth0"); !strings.HasPrefix(addr, c.prefix) {
			t.Errorf("container %s's eth0 holds %s, want an address in %s0.0/16", c.name, addr, c.prefix)
		}
		if !pingOK(in, lab.WANIP) {
			t.Errorf("container %s does not reach the wan", c.name)
		}
	}
	if out, err := e.hostRun("ip", "-4", "route", "show", "10.88.0.0/16"); err != nil || !strings.Contains(out, "cni-podman0") {
		t.Errorf("Podman's default network holds no route to 10.88.0.0/16 on the host: %v: %s", err, out)
	}
	if !eventually(func() bool { return httpGet(e.wanRun, lab.HostUplinkIP, 8085) == "web" }) {
		t.Errorf("README's container's published port does not answer the wan")
	}

	conf := readmeCNIConfig(t, "ctnet", e.root)
	conf["name"] = "ctnet88"
	conf["plugins"].([]any)[0].(map[string]any)["subnet"] = "10.88.0.0/16"
	if err := os.WriteFile(filepath.Join(p.dir, "net.d", "ctnet88.conflist"), []byte(marshal(t, conf)), 0o644); err != nil {
		t.Fatal(err)
	}
	before := ctnetVeths(e.linksIn(lab.InNetNS(e.host.Path)))
	if r := p.run("run", "--rm", "--network", "ctnet88", "--read-only", "--cgroup-parent", p.cgroupParent, "--rootfs", p.rootfs, "true"); r.Code == 0 || !strings.Contains(r.Stderr, "overlaps the host's") {
		t.Errorf("a container on a ctnet network with Podman's subnet: want a refusal naming the overlap, got %s", r)
	}
	if nets := e.networks(); slices.Contains(nets, "ctnet88") {
		t.Errorf("the refused network was made: %v", nets)
	}
	if after := ctnetVeths(e.linksIn(lab.InNetNS(e.host.Path))); !slices.Equal(before, after) {
		t.Errorf("the refused container left veths: %v, before %v", after, before)
	}
	p.must("rm", "--force", "--time", "0", "native", "web")
	e.must("network", "rm", "ctnet")
}
