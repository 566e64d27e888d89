package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/network"
)

// A setupTool connects pre-made namespaces ("containers") to one bridge network the
// way one system does it. Every container i gets: a veth pair with one end in the
// bridge, an IPv4 address, a default route, masquerade for the way out and host port
// portBase+i/tcp published to its port 80.
type setupTool interface {
	name() string
	// prepare makes what all containers share (bridge, network), outside the timed
	// region; the peers' scripts do this once too.
	prepare(ctx context.Context, r *setupRun) error
	// add and del are the timed steps, run on w, a thread in the lab's host
	// namespace (several at once under concurrency).
	add(ctx context.Context, w *nsThread, r *setupRun, i int) error
	del(ctx context.Context, w *nsThread, r *setupRun, i int) error
	// netns is container i's namespace once added (for the functional check).
	netns(r *setupRun, i int) (string, error)
}

// unchecked marks tools that do less than a container needs (the netlink floor),
// so the functional check does not apply.
type unchecked interface{ unchecked() }

// makesOwnNamespace marks tools that create the container's namespace themselves
// (ctnet run -d), so the harness makes none beforehand.
type makesOwnNamespace interface{ makesOwnNamespace() }

// portBase+i is container i's published host port.
const portBase = 20000

// containerPort is the port published for every container.
const containerPort = 80

// setupRun is one tool's run at one N in one fresh lab.
type setupRun struct {
	lab      *lab
	dir      string // scratch directory for the tool's state
	n        int
	ctnet    string // the ctnet binary
	ctnetCNI string // ctnet's CNI plugin
	// ipv6 makes ctnet's network dual-stack, and the functional check covers IPv6.
	ipv6 bool
}

// indexAddr is container i's address in a /16 whose first two octets are prefix (i=1
// is .0.3: .0.1 is the gateway), as the peers' scripts number them.
func indexAddr(prefix string, i int) string {
	return fmt.Sprintf("%s.%d.%d", prefix, (i+1)/254, (i+1)%254+1)
}

// ---- the reference article's steps: iproute2 and iptables(-nft), one command each

type manualTool struct{}

const manualPrefix = "10.88"

func (manualTool) name() string { return "article script" }

func (manualTool) prepare(ctx context.Context, r *setupRun) error {
	return r.lab.host.runAll(ctx, [][]string{
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "addr", "add", manualPrefix + ".0.1/16", "dev", "br0"},
		{"ip", "link", "set", "br0", "up"},
		{"iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", manualPrefix + ".0.0/16", "!", "-o", "br0", "-j", "MASQUERADE"},
	})
}

// manualDNAT is the rule pair that publishes container i's port (-A adds, -D deletes).
func manualDNAT(op string, i int) [][]string {
	port := strconv.Itoa(portBase + i)
	to := indexAddr(manualPrefix, i) + ":" + strconv.Itoa(containerPort)
	var cmds [][]string
	for _, chain := range []string{"PREROUTING", "OUTPUT"} {
		cmds = append(cmds, []string{"iptables", "-w", "-t", "nat", op, chain, "-d", hostUplinkIP, "-p", "tcp", "-m", "tcp",
			"--dport", port, "-j", "DNAT", "--to-destination", to})
	}
	return cmds
}

func (manualTool) add(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	host, peer, ns := "vh"+strconv.Itoa(i), "ce"+strconv.Itoa(i), r.lab.containerNS(i)
	cmds := [][]string{
		{"ip", "link", "add", host, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", ns},
		{"ip", "link", "set", host, "master", "br0"},
		{"ip", "link", "set", host, "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "addr", "add", indexAddr(manualPrefix, i) + "/16", "dev", peer},
		{"ip", "-n", ns, "link", "set", peer, "up"},
		{"ip", "-n", ns, "route", "add", "default", "via", manualPrefix + ".0.1"},
	}
	return w.runAll(ctx, append(cmds, manualDNAT("-A", i)...))
}

func (manualTool) del(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	return w.runAll(ctx, append(manualDNAT("-D", i), []string{"ip", "link", "del", "vh" + strconv.Itoa(i)}))
}

func (manualTool) netns(r *setupRun, i int) (string, error) {
	return r.lab.containerNSPath(i), nil
}

// ---- the CNI reference plugins, executed directly as a runtime does (no cnitool)

type cniTool struct {
	mu      sync.Mutex
	results map[int][]byte // each ADD's result: DEL gets it as prevResult, as libcni does
}

const cniPrefix = "10.89"

func (*cniTool) name() string { return "CNI plugins" }

func (t *cniTool) prepare(ctx context.Context, r *setupRun) error {
	t.results = map[int][]byte{}
	// The bridge and the plugins' chains are made by the first ADD, as with a runtime.
	return os.MkdirAll(filepath.Join(r.dir, "cni-ipam"), 0o700)
}

func (t *cniTool) bridgeConf(r *setupRun, prevResult []byte) []byte {
	conf := map[string]any{
		"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni-br0",
		"isGateway": true, "ipMasq": true, "hairpinMode": true,
		"ipam": map[string]any{
			"type": "host-local", "dataDir": filepath.Join(r.dir, "cni-ipam"),
			"ranges": [][]map[string]string{{{"subnet": cniPrefix + ".0.0/16", "gateway": cniPrefix + ".0.1"}}},
			"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
		},
	}
	if prevResult != nil {
		conf["prevResult"] = json.RawMessage(prevResult)
	}
	b, _ := json.Marshal(conf)
	return b
}

func (t *cniTool) portmapConf(i int, prevResult []byte) []byte {
	b, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "bench", "type": "portmap", "snat": true,
		"runtimeConfig": map[string]any{"portMappings": []map[string]any{
			{"hostPort": portBase + i, "containerPort": containerPort, "protocol": "tcp"}}},
		"prevResult": json.RawMessage(prevResult),
	})
	return b
}

func (t *cniTool) env(r *setupRun, command string, i int) []string {
	return []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=bench-" + strconv.Itoa(i),
		"CNI_NETNS=/run/netns/" + r.lab.containerNS(i), "CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni"}
}

func (t *cniTool) add(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	res, err := w.run(ctx, t.bridgeConf(r, nil), t.env(r, "ADD", i), "/usr/lib/cni/bridge")
	if err != nil {
		return err
	}
	if res, err = w.run(ctx, t.portmapConf(i, res), t.env(r, "ADD", i), "/usr/lib/cni/portmap"); err != nil {
		return err
	}
	t.mu.Lock()
	t.results[i] = res
	t.mu.Unlock()
	return nil
}

func (t *cniTool) del(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	t.mu.Lock()
	res := t.results[i]
	t.mu.Unlock()
	if res == nil {
		return fmt.Errorf("CNI DEL of container %d: no ADD result", i)
	}
	if _, err := w.run(ctx, t.portmapConf(i, res), t.env(r, "DEL", i), "/usr/lib/cni/portmap"); err != nil {
		return err
	}
	_, err := w.run(ctx, t.bridgeConf(r, res), t.env(r, "DEL", i), "/usr/lib/cni/bridge")
	return err
}

func (*cniTool) netns(r *setupRun, i int) (string, error) {
	return r.lab.containerNSPath(i), nil
}

// ---- netavark, podman's network backend, with the JSON podman passes it

type netavarkTool struct{}

const (
	netavarkPrefix = "10.90"
	netavarkPath   = "/usr/lib/podman/netavark"
)

func (netavarkTool) name() string { return "netavark" }

func (netavarkTool) prepare(ctx context.Context, r *setupRun) error {
	return os.MkdirAll(filepath.Join(r.dir, "netavark"), 0o700)
}

// input is what podman would send: netavark does no IPAM, podman picks the address.
func (netavarkTool) input(i int) []byte {
	b, _ := json.Marshal(map[string]any{
		"container_id":   fmt.Sprintf("%064x", i),
		"container_name": "bench" + strconv.Itoa(i),
		"port_mappings": []map[string]any{{"host_ip": "", "container_port": containerPort,
			"host_port": portBase + i, "range": 1, "protocol": "tcp"}},
		"networks": map[string]any{"bench": map[string]any{
			"static_ips": []string{indexAddr(netavarkPrefix, i)}, "interface_name": "eth0"}},
		"network_info": map[string]any{"bench": map[string]any{
			"name": "bench", "id": fmt.Sprintf("%064x", 0xbe1c4), "driver": "bridge",
			"network_interface": "nv-br0",
			"subnets":           []map[string]string{{"subnet": netavarkPrefix + ".0.0/16", "gateway": netavarkPrefix + ".0.1"}},
			"ipv6_enabled":      false, "internal": false, "dns_enabled": false,
			"ipam_options": map[string]string{"driver": "host-local"},
		}},
	})
	return b
}

func (t netavarkTool) call(ctx context.Context, w *nsThread, r *setupRun, command string, i int) error {
	_, err := w.run(ctx, t.input(i), nil, netavarkPath, "--config", filepath.Join(r.dir, "netavark"),
		command, r.lab.containerNSPath(i))
	return err
}

func (t netavarkTool) add(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	return t.call(ctx, w, r, "setup", i)
}

func (t netavarkTool) del(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	return t.call(ctx, w, r, "teardown", i)
}

func (netavarkTool) netns(r *setupRun, i int) (string, error) {
	return r.lab.containerNSPath(i), nil
}

// ---- ctnet

const (
	ctnetPrefix  = "10.91"
	ctnetPrefix6 = "fd63:746e:7491::"
	ctnetNetwork = "bench"
)

func ctnetRoot(r *setupRun) string { return filepath.Join(r.dir, "ctnet-root") }

func ctnetContainer(i int) string { return "c" + strconv.Itoa(i) }

func ctnetPublish(i int) string { return strconv.Itoa(portBase+i) + ":" + strconv.Itoa(containerPort) }

// ctnetCLI runs the ctnet binary inside the lab's host namespace.
func ctnetCLI(ctx context.Context, w *nsThread, r *setupRun, args ...string) ([]byte, error) {
	return w.run(ctx, nil, nil, append([]string{r.ctnet, "--root", ctnetRoot(r)}, args...)...)
}

func prepareCtnetNetwork(ctx context.Context, r *setupRun) error {
	args := []string{"network", "create", ctnetNetwork, "--subnet", ctnetPrefix + ".0.0/16"}
	if r.ipv6 {
		args = append(args, "--ipv6", "--subnet", ctnetPrefix6+"/64")
	}
	_, err := ctnetCLI(ctx, r.lab.host, r, args...)
	return err
}

// dualStack names the variant of a ctnet tool on a dual-stack network.
func dualStack(name string, ipv6 bool) string {
	if ipv6 {
		return name + ", dual-stack"
	}
	return name
}

// ctnetNetNS reads where ctnet keeps container i's namespace.
func ctnetNetNS(r *setupRun, i int) (string, error) {
	m, err := network.New(network.Options{Root: ctnetRoot(r), HostNetNS: r.lab.hostPath, NoFastPath: noFastPath()})
	if err != nil {
		return "", err
	}
	defer m.Close()
	c, err := m.Container(ctnetContainer(i))
	if err != nil {
		return "", err
	}
	return c.NetNS, nil
}

// ctnetAttachTool is `ctnet attach` / `ctnet rm`: the network work alone, through
// the CLI, on a namespace made beforehand like the peers'; with ipv6, on a
// dual-stack network.
type ctnetAttachTool struct{ ipv6 bool }

func (t ctnetAttachTool) name() string { return dualStack("ctnet attach (CLI)", t.ipv6) }

func (t ctnetAttachTool) prepare(ctx context.Context, r *setupRun) error {
	r.ipv6 = t.ipv6
	return prepareCtnetNetwork(ctx, r)
}

func (ctnetAttachTool) add(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	_, err := ctnetCLI(ctx, w, r, "attach", "--netns", r.lab.containerNSPath(i),
		"--name", ctnetContainer(i), "--network", ctnetNetwork, "-p", ctnetPublish(i))
	return err
}

func (ctnetAttachTool) del(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	_, err := ctnetCLI(ctx, w, r, "rm", ctnetContainer(i))
	return err
}

func (ctnetAttachTool) netns(r *setupRun, i int) (string, error) { return ctnetNetNS(r, i) }

// ctnetCNITool is ctnet's CNI plugin, executed as a runtime executes a plugin (and
// as the CNI reference plugins are above): one process per ADD and DEL.
type ctnetCNITool struct{}

func (ctnetCNITool) name() string { return "ctnet CNI plugin" }

func (ctnetCNITool) prepare(ctx context.Context, r *setupRun) error {
	return prepareCtnetNetwork(ctx, r)
}

func (ctnetCNITool) call(ctx context.Context, w *nsThread, r *setupRun, command string, i int) error {
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": ctnetNetwork, "type": "ctnet", "subnet": ctnetPrefix + ".0.0/16", "root": ctnetRoot(r),
		"runtimeConfig": map[string]any{"portMappings": []map[string]any{
			{"hostPort": portBase + i, "containerPort": containerPort, "protocol": "tcp"}}},
	})
	env := []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=bench-" + strconv.Itoa(i),
		"CNI_NETNS=/run/netns/" + r.lab.containerNS(i), "CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(r.ctnetCNI)}
	_, err := w.run(ctx, conf, env, r.ctnetCNI)
	return err
}

func (t ctnetCNITool) add(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	return t.call(ctx, w, r, "ADD", i)
}

func (t ctnetCNITool) del(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	return t.call(ctx, w, r, "DEL", i)
}

func (ctnetCNITool) netns(r *setupRun, i int) (string, error) {
	return r.lab.containerNSPath(i), nil
}

// ctnetAPITool is network.Manager.Create with NetNS / Remove, in this process: what
// a runtime linking the library pays.
type ctnetAPITool struct{ m *network.Manager }

func (*ctnetAPITool) name() string { return "ctnet Go API" }

func (t *ctnetAPITool) prepare(ctx context.Context, r *setupRun) error {
	m, err := network.New(network.Options{Root: ctnetRoot(r), HostNetNS: r.lab.hostPath, NoFastPath: noFastPath()})
	if err != nil {
		return err
	}
	r.lab.clean.Push("ctnet manager", m.Close)
	t.m = m
	_, err = m.CreateNetwork(context.Background(), network.NetworkSpec{Name: ctnetNetwork, Subnet: ctnetPrefix + ".0.0/16"})
	return err
}

func (t *ctnetAPITool) add(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	port, err := network.ParsePort(ctnetPublish(i))
	if err != nil {
		return err
	}
	_, err = t.m.Create(context.Background(), network.ContainerSpec{Name: ctnetContainer(i), Network: network.OnNetwork(ctnetNetwork),
		NetNS: r.lab.containerNSPath(i), Ports: []network.PortSpec{port}})
	return err
}

func (t *ctnetAPITool) del(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	return t.m.Remove(context.Background(), ctnetContainer(i), false)
}

func (*ctnetAPITool) netns(r *setupRun, i int) (string, error) { return ctnetNetNS(r, i) }

// ctnetRunTool is `ctnet run -d -- sleep` / `ctnet rm -f`: what a user waits for,
// including the namespace, the supervisor process and the container's process;
// with ipv6, on a dual-stack network.
type ctnetRunTool struct{ ipv6 bool }

func (t ctnetRunTool) name() string { return dualStack("ctnet run -d (CLI)", t.ipv6) }

func (ctnetRunTool) makesOwnNamespace() {}

func (t ctnetRunTool) prepare(ctx context.Context, r *setupRun) error {
	// A supervisor writes to the root until it exits (it records the exit): the root
	// is removed only once none is left.
	r.lab.clean.Push("ctnet supervisors", func() error { return awaitSupervisors(r.ctnet, 10*time.Second) })
	r.ipv6 = t.ipv6
	return prepareCtnetNetwork(ctx, r)
}

// awaitSupervisors waits until no supervisor of the ctnet binary exe is left,
// killing (by PID) those still there at the deadline.
func awaitSupervisors(exe string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(proc.OfExecutable(exe)) > 0 {
		if time.Now().After(deadline) {
			left := proc.OfExecutable(exe)
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return fmt.Errorf("%d supervisors still running after %s: killed", len(left), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (ctnetRunTool) add(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	_, err := ctnetCLI(ctx, w, r, "run", "-d", "--name", ctnetContainer(i), "--network", ctnetNetwork,
		"-p", ctnetPublish(i), "--", "sleep", "1000000")
	return err
}

func (ctnetRunTool) del(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	_, err := ctnetCLI(ctx, w, r, "rm", "-f", ctnetContainer(i))
	return err
}

func (ctnetRunTool) netns(r *setupRun, i int) (string, error) { return ctnetNetNS(r, i) }
