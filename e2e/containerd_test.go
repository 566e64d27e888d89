package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
)

// busyboxImage is the image name of busyboxImageTar: CRI's sandbox image and the
// pods' container image.
const busyboxImage = "ctnet.test/busybox:1"

// containerd is a containerd 1.6 of a test's own, running inside a sandbox's network
// namespace and in a private mount namespace in which /run is a tmpfs (so the
// namespaces CRI mounts under /run/netns and anything else it puts in /run stay
// there), /opt/cni/bin and /etc/cni/net.d are the test's directories (ctr's CNI uses
// those fixed paths), and its root, state, sockets, runc root and CNI directories are
// under dir. Nothing of the machine's containerd, CNI or runc state is read or written.
type containerd struct {
	t    *testing.T
	host *lab.Sandbox
	dir  string
	sock string
	cmd  *exec.Cmd
	// mountNS is containerd's mount namespace, as readlink shows it: the processes
	// still in it after containerd stopped are its leftovers.
	mountNS string
	// cgroup is the cgroup parent of its containers (under every hierarchy).
	cgroup string
}

// startContainerd starts containerd in host with conflist as its only CNI
// configuration, the ctnet plugin as "ctnet" and the reference loopback and host-local
// plugins (CRI runs every plugin from its one bin_dir); it is stopped by PID at cleanup, which fails the
// test if anything it started is still running.
func startContainerd(t *testing.T, host *lab.Sandbox, conflist string) *containerd {
	t.Helper()
	for _, tool := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			lab.Missing(t, "needs %s (Debian's containerd and runc)", tool)
		}
	}
	if st, err := os.Stat("/etc/cni/net.d"); err != nil || !st.IsDir() {
		lab.Missing(t, "needs a directory /etc/cni/net.d to mount the test's CNI configuration over")
	}
	// Not t.TempDir: the socket's path must stay within the 108 bytes of a unix address.
	dir, err := os.MkdirTemp("", "ctnet-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	d := &containerd{t: t, host: host, dir: dir, sock: filepath.Join(dir, "containerd.sock"), cgroup: "/" + filepath.Base(dir)}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, sub := range []string{"cni/bin", "cni/net.d", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, lab.CNIPlugin(t), filepath.Join(dir, "cni/bin/ctnet"))
	copyFile(t, "/usr/lib/cni/loopback", filepath.Join(dir, "cni/bin/loopback"))
	copyFile(t, "/usr/lib/cni/host-local", filepath.Join(dir, "cni/bin/host-local"))
	writeFile(t, filepath.Join(dir, "cni/net.d/10-ctnet.conflist"), conflist)
	writeFile(t, filepath.Join(dir, "crictl.yaml"), fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\n", d.sock, d.sock))
	config := filepath.Join(dir, "config.toml")
	writeFile(t, config, fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[8]q
    conf_dir = %[9]q
    max_conf_num = 1
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.sock, d.sock+".ttrpc", filepath.Join(dir, "opt"),
		busyboxImage, filepath.Join(dir, "runc"), filepath.Join(dir, "cni/bin"), filepath.Join(dir, "cni/net.d")))

	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	// The copies of the machine's namespace pins go, or they would keep other tests'
	// namespaces alive while containerd runs; one that its owner removes meanwhile
	// fails its umount, which is as good. The tmpfs over /opt only holds the mount
	// point of /opt/cni/bin: the directory need not exist on the machine.
	d.cmd = host.Command(context.Background(), "unshare", "--mount", "--propagation", "private", "sh", "-c",
		`umount -a -l -t nsfs; set -e; mount -t tmpfs ctnet-run /run; mkdir /run/netns; mount -t tmpfs ctnet-opt /opt; mkdir -p /opt/cni/bin
mount --bind "$0/cni/bin" /opt/cni/bin; mount --bind "$0/cni/net.d" /etc/cni/net.d; exec containerd --config "$1"`, dir, config)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	if !eventually(func() bool { _, err := d.try("ctr", "--address", d.sock, "version"); return err == nil }) {
		b, _ := os.ReadFile(log.Name())
		t.Fatalf("containerd does not answer on %s:\n%s", d.sock, b)
	}
	// nsenter has entered the network namespace and unshare the mount namespace
	// before containerd answers.
	d.mountNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		lab.Missing(t, "needs %s: %v", from, err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// try runs a command in containerd's network and mount namespaces.
func (d *containerd) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mnt := "--mount=/proc/" + strconv.Itoa(d.cmd.Process.Pid) + "/ns/mnt"
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + d.host.Path, mnt}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %v: %s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String(), nil
}

func (d *containerd) must(args ...string) string {
	d.t.Helper()
	out, err := d.try(args...)
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// ctr runs ctr against this containerd.
func (d *containerd) ctr(args ...string) (string, error) {
	return d.try(append([]string{"ctr", "--address", d.sock}, args...)...)
}

// crictl runs crictl against this containerd's CRI.
func (d *containerd) crictl(args ...string) string {
	d.t.Helper()
	return strings.TrimSpace(d.must(d.crictlCommand(args...)...))
}

func (d *containerd) crictlCommand(args ...string) []string {
	return append([]string{lab.TestTool(d.t, "crictl-v1.34.0"), "--config", filepath.Join(d.dir, "crictl.yaml")}, args...)
}

// importImage makes the busybox image known to CRI.
func (d *containerd) importImage(tarball string) {
	d.t.Helper()
	if out, err := d.ctr("-n", "k8s.io", "images", "import", "--snapshotter", "native", tarball); err != nil {
		d.t.Fatalf("import %s: %v: %s", tarball, err, out)
	}
}

// leftovers describes what containerd holds of pods and containers: CRI's pods,
// containers in any namespace, namespaces under /run/netns, and mounts under its
// directories other than the CNI directories it was given.
func (d *containerd) leftovers() string {
	d.t.Helper()
	var out []string
	if pods := d.crictl("pods", "-q"); pods != "" {
		out = append(out, "pods: "+pods)
	}
	for _, ns := range []string{"default", "k8s.io"} {
		if ids, _ := d.ctr("-n", ns, "containers", "ls", "-q"); strings.TrimSpace(ids) != "" {
			out = append(out, "containers in "+ns+": "+strings.TrimSpace(ids))
		}
	}
	if netns := strings.TrimSpace(d.must("ls", "/run/netns")); netns != "" {
		out = append(out, "/run/netns: "+netns)
	}
	for _, line := range strings.Split(d.must("cat", "/proc/self/mountinfo"), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], d.dir+"/") || len(f) > 4 && strings.HasPrefix(f[4], "/run/netns/") {
			out = append(out, "mount "+f[4])
		}
	}
	return strings.Join(out, "\n")
}

// stop removes what the test left (pods, containers) so that it can stop containerd
// by its PID, then fails the test if any process in its mount namespace (a shim, a
// container) outlives it, and removes the cgroups it made.
func (d *containerd) stop() {
	t := d.t
	if d.mountNS != "" {
		if pods, _ := d.try(d.crictlCommand("pods", "-q")...); strings.TrimSpace(pods) != "" {
			d.try(d.crictlCommand("rmp", "-a", "-f")...)
		}
		ids, _ := d.ctr("-n", "default", "containers", "ls", "-q")
		for _, id := range strings.Fields(ids) {
			d.ctr("-n", "default", "tasks", "kill", "-s", "KILL", id)
			d.ctr("-n", "default", "tasks", "delete", "-f", id)
			d.ctr("-n", "default", "containers", "delete", id)
		}
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() { d.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Errorf("containerd (pid %d) did not stop on SIGTERM", d.cmd.Process.Pid)
		d.cmd.Process.Kill()
		<-exited
	}
	if d.mountNS != "" {
		for _, pid := range processesInMountNS(d.mountNS) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			t.Errorf("process %d (%s) that containerd started outlived it", pid, strings.TrimSpace(string(comm)))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*" + d.cgroup)
	for _, h := range hierarchies {
		if err := os.Remove(h); err != nil && !os.IsNotExist(err) {
			t.Errorf("remove the containers' cgroup: %v", err)
		}
	}
}

// processesInMountNS lists the processes whose mount namespace is ns.
func processesInMountNS(ns string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && l == ns {
			out = append(out, pid)
		}
	}
	return out
}

// busyboxImageTar writes an OCI image archive of a busybox root filesystem (its
// command sleeps, as a pod's sandbox container) with a CGI program at
// /www/cgi-bin/peer that answers with the client's address, for busybox httpd.
func busyboxImageTar(t *testing.T) string {
	t.Helper()
	rootfs := lab.BusyboxRootfs(t)
	if err := os.MkdirAll(filepath.Join(rootfs, "www/cgi-bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "www/cgi-bin/peer"), []byte("#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	err := filepath.WalkDir(rootfs, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || path == rootfs {
			return err
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		target := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, target)
		if err != nil {
			return err
		}
		hdr.Name, _ = filepath.Rel(rootfs, path)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err != nil || tw.Close() != nil {
		t.Fatalf("make the image's layer: %v", err)
	}
	blobs := map[string][]byte{}
	blob := func(b []byte) (digest string, size int) {
		sum := sha256.Sum256(b)
		digest = "sha256:" + hex.EncodeToString(sum[:])
		blobs[digest] = b
		return digest, len(b)
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	layerDigest, layerSize := blob(layer.Bytes())
	configDigest, configSize := blob(mustJSON(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"sleep", "1000000"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	}))
	manifestDigest, manifestSize := blob(mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	}))
	files := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": mustJSON(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"annotations": map[string]string{"io.containerd.image.name": busyboxImage},
			"platform":    map[string]string{"architecture": "amd64", "os": "linux"},
		}}}),
	}
	for digest, b := range blobs {
		files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")] = b
	}
	path := filepath.Join(t.TempDir(), "busybox.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	archive := tar.NewWriter(f)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := archive.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range files {
		if err := archive.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := archive.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := archive.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// pod is a CRI pod sandbox running busybox httpd, whose /cgi-bin/peer answers with
// the client's address.
type pod struct {
	name          string
	id, container string
	ip            string
	pid           int // the sandbox container's process, whose network namespace is the pod's
}

// runPod starts a pod with its port mappings (hostPort:containerPort over TCP) and
// an httpd container in it.
func (d *containerd) runPod(name string, hostPort int) pod {
	d.t.Helper()
	return d.runAnnotatedPod(name, hostPort, nil)
}

// runAnnotatedPod is runPod with the pod's annotations, as the kubelet passes a
// pod's metadata.annotations to CRI.
func (d *containerd) runAnnotatedPod(name string, hostPort int, annotations map[string]string) pod {
	d.t.Helper()
	dir := filepath.Join(d.dir, "pods", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		d.t.Fatal(err)
	}
	podConfig := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
		"hostname":      name,
		"log_directory": filepath.Join(d.dir, "logs", name),
		"linux":         map[string]any{"cgroup_parent": d.cgroup},
	}
	if annotations != nil {
		podConfig["annotations"] = annotations
	}
	if hostPort != 0 {
		podConfig["port_mappings"] = []any{map[string]any{"protocol": 0, "container_port": 80, "host_port": hostPort}}
	}
	containerConfig := map[string]any{
		"metadata": map[string]any{"name": "httpd"},
		"image":    map[string]any{"image": busyboxImage},
		"command":  []string{"httpd", "-f", "-vv", "-p", "0.0.0.0:80", "-h", "/www"},
		"log_path": "httpd.log",
	}
	for file, v := range map[string]any{"pod.json": podConfig, "container.json": containerConfig} {
		b, err := json.Marshal(v)
		if err != nil {
			d.t.Fatal(err)
		}
		writeFile(d.t, filepath.Join(dir, file), string(b))
	}
	p := pod{name: name, id: d.crictl("runp", filepath.Join(dir, "pod.json"))}
	p.container = d.crictl("create", p.id, filepath.Join(dir, "container.json"), filepath.Join(dir, "pod.json"))
	d.crictl("start", p.container)
	var status struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			PID int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(d.crictl("inspectp", p.id)), &status); err != nil {
		d.t.Fatalf("crictl inspectp %s: %v", p.id, err)
	}
	p.ip, p.pid = status.Status.Network.IP, status.Info.PID
	if p.ip == "" || p.pid == 0 {
		d.t.Fatalf("pod %s: CRI reports no address or process: %+v", name, status)
	}
	return p
}

// containerLog is the file CRI writes the pod's httpd output to.
func (d *containerd) containerLog(p pod) string {
	return filepath.Join(d.dir, "logs", p.name, "httpd.log")
}

// netns is the argument prefix that runs a command in the pod's network namespace.
func (p pod) netns() []string { return lab.InNetNS(fmt.Sprintf("/proc/%d/ns/net", p.pid)) }

// removePod stops and removes a pod as the kubelet does.
func (d *containerd) removePod(p pod) {
	d.t.Helper()
	d.crictl("stopp", p.id)
	d.crictl("rmp", p.id)
}

// httpPeer asks an httpd pod at addr:port, from the command prefix, whom it sees
// the client as; "" if it does not answer.
func httpPeer(run func(args ...string) (string, error), addr string, port int) string {
	out, err := run("sh", "-c", fmt.Sprintf(`printf 'GET /cgi-bin/peer HTTP/1.0\r\n\r\n' | socat -T2 - TCP:%s:%d,connect-timeout=2`, addr, port))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// eth0Addr is the IPv4 address of eth0 as iproute2 sees it from the command prefix.
func eth0Addr(t *testing.T, run func(args ...string) (string, error)) string {
	t.Helper()
	out, err := run("ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("ip addr show eth0: %v: %s", err, out)
	}
	m := regexp.MustCompile(`inet (\S+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("eth0 has no IPv4 address: %s", out)
	}
	return m[1]
}

// ctnetLeftovers describes what of ctnet's is left on a host whose pods are all gone:
// containers in its records, host veths, and published ports and endpoints in its
// firewall.
func ctnetLeftovers(t *testing.T, host *lab.Sandbox, root string) string {
	t.Helper()
	var out []string
	if ids := strings.TrimSpace(host.MustCtnet(t, root, "ps", "-a", "-q")); ids != "" {
		out = append(out, "containers: "+ids)
	}
	host.AwaitDyingVeths(t) // the links DEL retired
	if veths := strings.TrimSpace(host.MustRun(t, "ip", "-o", "link", "show", "type", "veth")); veths != "" {
		for _, l := range strings.Split(veths, "\n") {
			if !strings.Contains(l, "uplink0") && !strings.Contains(l, "under0") {
				out = append(out, "veth: "+l)
			}
		}
	}
	for _, set := range []string{"map inet ctnet ports", "map inet ctnet ports_any", "set bridge ctnet ports"} {
		if list := host.MustRun(t, append([]string{"nft", "list"}, strings.Fields(set)...)...); strings.Contains(list, "elements") {
			out = append(out, set+": "+list)
		}
	}
	return strings.Join(out, "\n")
}

// ctr run --cni, which runs ctnet-cni from /opt/cni/bin with /etc/cni/net.d's
// configuration (README's, in containerd's mount namespace), gives the container
// an address iproute2 finds inside, a way out to the wan masqueraded, and takes it
// all away again when the container ends. ctr run -d, which never DELs, can run a
// container of the same ID again once ctnet gc released the first one's record.
func TestContainerdCtr(t *testing.T) {
	e := newEnv(t)
	d := startContainerd(t, e.host, marshal(t, readmeCNIConfig(t, "ctnet", e.root)))
	rootfs := lab.BusyboxRootfs(t)
	server := e.wan.Command(t.Context(), peerServer(7000)...)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { server.Process.Kill(); server.Wait() }()
	if !eventually(func() bool { return askPeer(e.hostRun, lab.WANIP, 7000) != "" }) {
		t.Fatal("the wan's server does not answer")
	}

	out, err := d.ctr("run", "--cni", "--rm", "--env", "PATH=/bin", "--runc-root", filepath.Join(d.dir, "runc"),
		"--fifo-dir", filepath.Join(d.dir, "fifo"), "--cgroup", "", "--rootfs", rootfs, "ctr-1",
		"sh", "-c", "ip -4 -o addr show dev eth0; ping -c1 -W2 "+lab.WANIP+" >/dev/null && echo ping ok; nc "+lab.WANIP+" 7000 </dev/null")
	if err != nil {
		t.Fatalf("ctr run --cni: %v", err)
	}
	if !regexp.MustCompile(`eth0\s+inet 10\.90\.\d+\.\d+/16 `).MatchString(out) {
		t.Errorf("the container's eth0 has no address on README's 10.90.0.0/16:\n%s", out)
	}
	if !strings.Contains(out, "ping ok") {
		t.Errorf("the container does not reach the wan:\n%s", out)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); lines[len(lines)-1] != lab.HostUplinkIP {
		t.Errorf("the wan saw the container as %q, want the host's %s (masqueraded):\n%s", lines[len(lines)-1], lab.HostUplinkIP, out)
	}
	if left := d.leftovers(); left != "" {
		t.Errorf("containerd holds after the container ended:\n%s", left)
	}
	if left := ctnetLeftovers(t, e.host, e.root); left != "" {
		t.Errorf("ctnet holds after the container ended:\n%s", left)
	}

	// ctr run -d never DELs: the pod's namespace is its task's and goes with it, ctnet
	// gc releases the record, and the next run of the same ID gets its network.
	const record = "cni-default-ctr-2" // ctr's CNI container ID: namespace-ID
	for round := 1; round <= 2; round++ {
		if out, err := d.ctr("run", "--cni", "-d", "--env", "PATH=/bin", "--runc-root", filepath.Join(d.dir, "runc"),
			"--fifo-dir", filepath.Join(d.dir, "fifo"), "--cgroup", "", "--rootfs", rootfs, "ctr-2", "sleep", "600"); err != nil {
			t.Fatalf("run %d of ctr run --cni -d with the same ID: %v: %s", round, err, out)
		}
		out, err := d.ctr("tasks", "exec", "--exec-id", "look", "ctr-2", "sh", "-c", "ip -4 -o addr show dev eth0; ping -c1 -W2 "+lab.WANIP+" >/dev/null && echo ping ok")
		if err != nil || !regexp.MustCompile(`eth0\s+inet 10\.90\.\d+\.\d+/16 `).MatchString(out) || !strings.Contains(out, "ping ok") {
			t.Errorf("run %d: the detached container has no address of README's network or no way to the wan: %v\n%s", round, err, out)
		}
		for _, cmd := range [][]string{{"tasks", "delete", "--force", "ctr-2"}, {"containers", "delete", "ctr-2"}} {
			if out, err := d.ctr(cmd...); err != nil {
				t.Fatalf("ctr %s: %v: %s", strings.Join(cmd, " "), err, out)
			}
		}
		if gc := e.must("gc"); !strings.Contains(gc, record) {
			t.Errorf("run %d: ctnet gc did not release %s after its task ended:\n%s", round, record, gc)
		}
	}
	if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) != 1 {
		t.Errorf("want the one record gc released, have %v", ids)
	}
	e.must("rm", record)
	if left := d.leftovers(); left != "" {
		t.Errorf("containerd holds after the detached container:\n%s", left)
	}
	if left := ctnetLeftovers(t, e.host, e.root); left != "" {
		t.Errorf("ctnet holds after the detached container:\n%s", left)
	}
	e.must("network", "rm", "ctnet")
}

// CRI, driven by crictl as the kubelet drives it, runs a pod with a hostPort on
// ctnet: the address CRI reports is the one iproute2 finds in the pod, the pod
// reaches the wan, its hostPort answers from the wan with the client's real address,
// and stopp and rmp leave nothing of the pod in containerd or ctnet.
func TestContainerdCRI(t *testing.T) {
	e := newEnv(t)
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "crinet", "plugins": [
  {"type": "ctnet", "subnet": "10.92.0.0/24", "root": %q, "capabilities": {"portMappings": true}}]}`, e.root)
	d := startContainerd(t, e.host, conflist)
	d.importImage(busyboxImageTar(t))

	p := d.runPod("web", 8080)
	inPod := func(args ...string) (string, error) { return e.host.Try(append(p.netns(), args...)...) }
	if got := eth0Addr(t, inPod); got != p.ip {
		t.Errorf("CRI reports the pod at %s, iproute2 finds %s on its eth0", p.ip, got)
	}
	if !strings.HasPrefix(p.ip, "10.92.0.") {
		t.Errorf("the pod's address %s is not on the configuration's 10.92.0.0/24", p.ip)
	}
	if !pingOK(inPod, lab.WANIP) {
		t.Errorf("the pod does not reach the wan")
	}
	var seen string
	if !eventually(func() bool { seen = httpPeer(e.wanRun, lab.HostUplinkIP, 8080); return seen != "" }) {
		t.Errorf("the pod's hostPort 8080 does not answer from the wan")
	} else if seen != lab.WANIP {
		t.Errorf("the pod saw the wan's client as %s, want %s", seen, lab.WANIP)
	}
	if ps := e.must("ps"); !strings.Contains(ps, "0.0.0.0:8080->80/tcp") || !strings.Contains(ps, p.ip) {
		t.Errorf("ctnet ps does not show the pod with its hostPort:\n%s", ps)
	}

	// The checks below find the pod while it runs.
	if held := d.leftovers(); !strings.Contains(held, "pods: "+p.id) || !strings.Contains(held, "/run/netns: cni-") {
		t.Errorf("containerd's leftovers do not show the running pod and its namespace:\n%s", held)
	}
	if held := ctnetLeftovers(t, e.host, e.root); !strings.Contains(held, "containers: ") || !strings.Contains(held, "veth: ") || !strings.Contains(held, "ports_any") {
		t.Errorf("ctnet's leftovers do not show the running pod's record, veth and hostPort:\n%s", held)
	}
	d.removePod(p)
	if left := d.leftovers(); left != "" {
		t.Errorf("containerd holds after stopp and rmp:\n%s", left)
	}
	if left := ctnetLeftovers(t, e.host, e.root); left != "" {
		t.Errorf("ctnet holds after stopp and rmp:\n%s", left)
	}
	e.must("network", "rm", "crinet")
}

// Kubernetes' bandwidth annotations on a pod reach ctnet as the kubelet sends them:
// containerd's CRI turns them into CNI's bandwidth capability, tc shows the limits on
// a veth and an ifb, each bucket's queue holding 25 ms at its rate, and iperf3 from
// the pod measures each within 20%. containerd gives no burst but 2^32-1 bits ("no
// limit", as Kubernetes meant it: kubernetes/kubernetes#90838), so a first run in
// each direction empties the bucket, as a pod's first half gigabyte does. rmp leaves
// no ifb.
func TestContainerdCRIBandwidth(t *testing.T) {
	e := newEnv(t)
	iperf3Server(t, e)
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "crinet", "plugins": [
  {"type": "ctnet", "subnet": "10.92.0.0/24", "root": %q, "capabilities": {"bandwidth": true}}]}`, e.root)
	d := startContainerd(t, e.host, conflist)
	d.importImage(busyboxImageTar(t))

	p := d.runAnnotatedPod("limited", 0, map[string]string{"kubernetes.io/ingress-bandwidth": "20M", "kubernetes.io/egress-bandwidth": "10M"})
	inPod := func(args ...string) (string, error) { return e.host.Try(append(p.netns(), args...)...) }
	// The pod's namespace is in containerd's mount namespace, where ctnet inspect
	// cannot open it; tc finds the token buckets: into the pod on its host veth, out
	// of it on an ifb.
	var veth, ifb string
	qdiscs := e.output("tc", "qdisc", "show")
	for _, line := range strings.Split(qdiscs, "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[1] == "tbf" && f[3] == "dev" {
			switch {
			case strings.Contains(line, " rate 20Mbit "):
				veth = f[4]
			case strings.Contains(line, " rate 10Mbit "):
				ifb = f[4]
			}
			if !strings.Contains(line, " lat 25ms") {
				t.Errorf("a token bucket's queue holds more than 25 ms at its rate: %s", line)
			}
		}
	}
	if out := e.output("ip", "-d", "link", "show", "dev", veth); veth == "" || !strings.Contains(out, "veth") {
		t.Errorf("no 20Mbit token bucket on a veth (%q: %s):\n%s", veth, out, qdiscs)
	}
	if out := e.output("ip", "-d", "link", "show", "dev", ifb); ifb == "" || !strings.Contains(out, "ifb") {
		t.Fatalf("no 10Mbit token bucket on an ifb (%q: %s):\n%s", ifb, out, qdiscs)
	}
	for _, c := range []struct {
		into  bool
		limit float64
		what  string
	}{{true, ingressLimit, "ingress"}, {false, egressLimit, "egress"}} {
		first := throughputFrom(t, inPod, c.into)
		got := throughputFrom(t, inPod, c.into)
		t.Logf("pod's %s, annotated %.0f bit/s: %.2f Mbit/s (the first run, from a full bucket: %.2f Mbit/s)", c.what, c.limit, got/1e6, first/1e6)
		if got < 0.8*c.limit || got > 1.2*c.limit {
			t.Errorf("pod's %s: %.2f Mbit/s, want %.0f Mbit/s ±20%%", c.what, got/1e6, c.limit/1e6)
		}
	}
	d.removePod(p)
	checkIFBRetired(t, e, ifb, "rmp")
	if left := ctnetLeftovers(t, e.host, e.root); left != "" {
		t.Errorf("ctnet holds after stopp and rmp:\n%s", left)
	}
	e.must("network", "rm", "crinet")
}
