package e2e

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/network"
)

// Remove returns before the kernel has deleted an attached container's links (it
// retires them, and their deletion is handed on): this test holds that deletion
// back, as a slow machine might, and checks the contract meanwhile with real
// packets. When Remove returns, nothing of the container sends or receives — not
// even after its owner brings the retired interface up again with its old address
// and route, as root in the namespace can — its interface's name is free in its
// namespace, and its address and published port serve a new container at once.
// Each check has its positive control before the removal, or on the new container.
func TestRemoveTakesContainerOutAtOnce(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "web", "--subnet", "10.97.0.0/24")
	e.runDetached("--name", "peer", "--network", "web", "--", "sleep", "600")
	peerIP := e.ip("peer")
	const oldIP, gateway = "10.97.0.50", "10.97.0.1"

	var held []*netns.NS
	m, err := network.New(network.Options{Root: e.root, HostNetNS: e.host.Path,
		DeleteRetired: func(host *netns.NS) error { held = append(held, host); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()

	old, inOld := namedNS(t)
	port, err := network.ParsePort("8080:80")
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.Create(ctx, network.ContainerSpec{Name: "old", Network: network.OnNetwork("web"), NetNS: "/run/netns/" + old,
		IP: oldIP, Ports: []network.PortSpec{port}})
	if err != nil {
		t.Fatal(err)
	}
	hostVeth := c.Attachments[0].HostVeth
	serveNameIn(t, old, "old")
	peer := e.containerRun("peer")
	if !eventually(func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, 8080) == "old" }) {
		t.Fatal("control: the wan does not reach the attached container's published port")
	}
	for _, to := range []string{gateway, peerIP, lab.WANIP} {
		if !pingOK(inOld, to) {
			t.Fatalf("control: the attached container cannot reach %s", to)
		}
	}
	if !pingOK(peer, oldIP) {
		t.Fatal("control: another container cannot reach the attached one")
	}

	if err := m.Remove(ctx, "old", false); err != nil {
		t.Fatal(err)
	}
	if len(held) == 0 {
		t.Fatal("Remove handed no deletion on: this test needs its links still there")
	}
	links, _ := inOld("ip", "-o", "link")
	retired := ""
	for _, l := range strings.Split(strings.TrimSpace(links), "\n") {
		if f := strings.Fields(l); len(f) > 1 && !strings.HasPrefix(f[1], "lo:") {
			retired = strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
		}
	}
	if retired == "" || retired == "eth0" {
		t.Fatalf("want the container's interface renamed away from eth0 and not yet deleted:\n%s", links)
	}
	if out, _ := e.hostRun("ip", "-o", "link", "show", hostVeth); !strings.Contains(out, "state DOWN") || strings.Contains(out, ",UP") {
		t.Errorf("host end %s should be down:\n%s", hostVeth, out)
	}
	// The container's owner is root in its namespace and puts the interface back.
	inOld("ip", "link", "set", retired, "up")
	inOld("ip", "addr", "add", oldIP+"/24", "dev", retired)
	inOld("ip", "route", "replace", "default", "via", gateway)
	for _, to := range []string{gateway, peerIP, lab.WANIP} {
		if pingOK(inOld, to) {
			t.Errorf("after Remove returned, the removed container still reaches %s", to)
		}
	}
	if pingOK(peer, oldIP) {
		t.Error("after Remove returned, another container still reaches the removed one")
	}
	if got := askPeer(e.wanRun, lab.HostUplinkIP, 8080); got != "" {
		t.Errorf("after Remove returned, the published port still reaches the removed container: %q", got)
	}

	// Its address and port serve a new namespace, and its interface name its own
	// namespace again, while the old links are still there. (The owner's route
	// through the retired interface goes with it down.)
	inOld("ip", "link", "set", retired, "down")
	fresh, inFresh := namedNS(t)
	e.must("attach", "--netns", "/run/netns/"+fresh, "--name", "new", "--network", "web", "--ip", oldIP, "-p", "8080:80")
	e.must("attach", "--netns", "/run/netns/"+old, "--name", "again", "--network", "web")
	serveNameIn(t, fresh, "new")
	if !eventually(func() bool { return askPeer(e.wanRun, lab.HostUplinkIP, 8080) == "new" }) {
		t.Error("the published port does not reach the new container with the old one's address")
	}
	if !pingOK(inFresh, gateway) || !pingOK(peer, oldIP) {
		t.Error("the new container with the old one's address is not reachable both ways")
	}
	if out, _ := inOld("ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "eth0@") {
		t.Errorf("attaching the old namespace again made no eth0 there:\n%s", out)
	}

	for _, host := range held {
		if _, err := link.DeleteRetired(host); err != nil {
			t.Fatal(err)
		}
	}
	e.must("rm", "-f", "new", "again", "peer")
	e.must("network", "rm", "web")
}

// namedNS makes a namespace with `ip netns add`, as a runtime would, removed when
// the test ends, and a function that runs a command in it.
func namedNS(t *testing.T) (string, func(args ...string) (string, error)) {
	t.Helper()
	name := lab.RandomName("ctt-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	exec.Command("ip", "-n", name, "link", "set", "lo", "up").Run()
	return name, func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s: %w", strings.Join(args, " "), err)
		}
		return string(out), nil
	}
}

// serveNameIn runs, in a named namespace until the test ends, a TCP server on port 80
// that answers every connection with name.
func serveNameIn(t *testing.T, ns, name string) {
	t.Helper()
	server := exec.Command("ip", "netns", "exec", ns, "socat", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:echo "+name)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() })
}

// Any user of the host namespace can bind the abstract name with which one deleting
// process at a time holds the deletion of retired links: a name held by another user
// must not keep rm's links from being deleted. The squatter is the unprivileged test
// user; the positive control is the same rm with the name free.
func TestRetiredLinksDeletedWhenLockSquatted(t *testing.T) {
	e := newEnv(t)
	uid, gid := lab.TestUser(t)
	e.must("network", "create", "web", "--subnet", "10.97.1.0/24")
	gone := func(name string) bool {
		return eventually(func() bool {
			out, _ := e.hostRun("ip", "-o", "link", "show", "group", "0x63746e78")
			return !strings.Contains(out, name)
		})
	}
	rmAttached := func() string {
		ns, _ := namedNS(t)
		e.must("attach", "--netns", "/run/netns/"+ns, "--name", "c", "--network", "web")
		veth := e.inspect("c").Networks[0].HostVeth
		e.must("rm", "c")
		return veth
	}
	if veth := rmAttached(); !gone(veth) {
		t.Fatalf("control: rm's retired link %s is not deleted", veth)
	}

	squatter := exec.Command("nsenter", "--net="+e.host.Path, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", gid),
		"--clear-groups", "/usr/bin/python3", "-c", `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind("\0ctnet-delete-retired")
s.listen(8)
print("bound", flush=True)
time.sleep(600)
`)
	out, err := squatter.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { squatter.Process.Kill(); squatter.Wait() })
	line := make([]byte, 6)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "bound\n" {
		t.Fatalf("the squatter did not bind the name: %q %v", line, err)
	}
	if veth := rmAttached(); !gone(veth) {
		t.Errorf("with the lock's name held by uid %d, rm's retired link %s is never deleted", uid, veth)
	}
	e.must("network", "rm", "web")
}
