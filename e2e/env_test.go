// Package e2e tests ctnet end to end: the real binary, in sandbox namespaces, checked
// with iproute2, nft and real traffic.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/proc"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// env is one test's world: a sandbox host with a wan behind it and a ctnet root.
type env struct {
	t      *testing.T
	host   *lab.Sandbox
	wan    *lab.WAN
	root   string
	before lab.Snapshot
}

// newEnv makes the sandbox and, at cleanup, removes every container and network the
// test left and fails it if the sandbox is not back to how it started.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOf(t, true)
}

// newNode is newEnv without a wan: a host that reaches others only by the links the
// test adds (and removes before the check at cleanup).
func newNode(t *testing.T) *env {
	t.Helper()
	return newEnvOf(t, false)
}

func newEnvOf(t *testing.T, withWAN bool) *env {
	t.Helper()
	lab.RequireRoot(t)
	for _, tool := range []string{"nft", "socat", "ping", "curl"} {
		if _, err := lookPath(tool); err != nil {
			lab.Missing(t, "needs %s", tool)
		}
	}
	e := &env{t: t, host: lab.NewSandbox(t)}
	if withWAN {
		e.wan = e.host.AddWAN(t)
	}
	e.root = lab.Root(t)
	e.before = e.host.Snapshot(t, e.root)
	bin := lab.Binary(t)
	// After the cleanup below, which runs ctnet in the sandbox's boot, even if it
	// fails.
	t.Cleanup(func() {
		if e.host.Boot != nil {
			if err := e.host.Boot.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	t.Cleanup(func() {
		if ids := strings.Fields(e.ctnet("ps", "-a", "-q").Stdout); len(ids) > 0 {
			t.Errorf("containers left by the test: %v", ids)
			e.ctnet(append([]string{"rm", "-f"}, ids...)...)
		}
		for _, n := range e.networks() {
			t.Errorf("network left by the test: %s", n)
			e.ctnet("network", "rm", "-f", n)
		}
		if diff := e.before.Diff(e.host.Snapshot(t, e.root)); diff != "" {
			t.Errorf("the sandbox is not as it was before the test:\n%s", diff)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(processesOfRoot(bin, e.root)) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if pids := processesOfRoot(bin, e.root); len(pids) > 0 {
			t.Errorf("ctnet processes left running: %v", pids)
		}
	})
	return e
}

// processesOfRoot returns the PIDs of ctnet processes working on root: commands
// given --root, and supervisors, which get it in CTNET_ROOT. Tests that run in
// parallel each see only their own.
func processesOfRoot(bin, root string) []int {
	var out []int
	for _, pid := range proc.OfExecutable(bin) {
		dir := "/proc/" + strconv.Itoa(pid)
		cmdline, _ := os.ReadFile(dir + "/cmdline")
		environ, _ := os.ReadFile(dir + "/environ")
		environ = append([]byte{0}, environ...)
		if bytes.Contains(cmdline, []byte("\x00"+root+"\x00")) || bytes.Contains(environ, []byte("\x00CTNET_ROOT="+root+"\x00")) {
			out = append(out, pid)
		}
	}
	return out
}

func (e *env) ctnet(args ...string) lab.Result {
	e.t.Helper()
	return e.host.Ctnet(e.t, e.root, args...)
}

func (e *env) must(args ...string) string {
	e.t.Helper()
	return e.host.MustCtnet(e.t, e.root, args...)
}

func (e *env) networks() []string {
	e.t.Helper()
	var ns []struct{ Name string }
	e.decode(e.must("network", "ls", "--format", "json"), &ns)
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out
}

func (e *env) decode(s string, v any) {
	e.t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		e.t.Fatalf("decode %q: %v", s, err)
	}
}

// decodeInspected decodes what inspect --format json printed for one name: an array
// holding exactly one object.
func (e *env) decodeInspected(s string, v any) {
	e.t.Helper()
	var all []json.RawMessage
	e.decode(s, &all)
	if len(all) != 1 {
		e.t.Fatalf("inspect printed %d objects for one name, want one: %s", len(all), s)
	}
	e.decode(string(all[0]), v)
}

// container is the part of `ctnet inspect --format json` the tests read.
type container struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	State    string `json:"state"`
	NetNS    string `json:"netns"`
	ExitCode int    `json:"exit_code"`
	Networks []struct {
		Network   string `json:"network"`
		Interface string `json:"interface"`
		HostVeth  string `json:"host_veth"`
		IP        string `json:"ip"`
		Gateway   string `json:"gateway"`
		Gateway6  string `json:"gateway6"`
	} `json:"networks"`
	Process struct {
		PID int `json:"pid"`
	} `json:"process"`
	Supervisor struct {
		PID int `json:"pid"`
	} `json:"supervisor"`
}

func (e *env) inspect(name string) container {
	e.t.Helper()
	var c container
	e.decodeInspected(e.must("inspect", "--format", "json", name), &c)
	return c
}

func (e *env) ip(name string) string {
	e.t.Helper()
	c := e.inspect(name)
	if len(c.Networks) == 0 {
		e.t.Fatalf("container %s has no network", name)
	}
	return c.Networks[0].IP
}

// kernelAddr is the IPv4 address of a container's interface as the kernel holds it,
// read with iproute2 inside the container's namespace rather than from ctnet's
// records; the test fails unless the interface has exactly one.
func (e *env) kernelAddr(name, ifname string) string {
	e.t.Helper()
	addrs := e.linksIn(lab.InNetNS(e.inspect(name).NetNS))[ifname].ipv4()
	if len(addrs) != 1 {
		e.t.Fatalf("container %s: %s holds the IPv4 addresses %v, want one", name, ifname, addrs)
	}
	addr, _, _ := strings.Cut(addrs[0], "/")
	return addr
}

// runDetached starts a container in the background and removes it at cleanup.
func (e *env) runDetached(args ...string) string {
	e.t.Helper()
	id := strings.TrimSpace(e.must(append([]string{"run", "-d"}, args...)...))
	return id
}

// inContainer runs a command inside a container's namespace with nsenter, not
// through ctnet, so the check is independent of ctnet's own exec.
func (e *env) inContainer(name string, args ...string) (string, error) {
	e.t.Helper()
	c := e.inspect(name)
	return e.host.Try(append(lab.InNetNS(c.NetNS), args...)...)
}

// peerServer is a socat command line for a server that answers every TCP
// connection with the address it sees the client at.
func peerServer(port int) []string {
	return []string{"socat", fmt.Sprintf("TCP-LISTEN:%d,fork,reuseaddr", port), "SYSTEM:echo $SOCAT_PEERADDR"}
}

func udpPeerServer(port int) []string {
	return []string{"socat", fmt.Sprintf("UDP-RECVFROM:%d,fork,reuseaddr", port), "SYSTEM:echo $SOCAT_PEERADDR"}
}

// askPeer connects to addr:port over TCP from the command prefix and returns what
// the server says (the client address it saw), or "" if it could not connect.
func askPeer(run func(args ...string) (string, error), addr string, port int) string {
	out, err := run("socat", "-T2", "-", fmt.Sprintf("TCP:%s:%d,connect-timeout=2", addr, port))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

func askPeerUDP(run func(args ...string) (string, error), addr string, port int) string {
	out, err := run("sh", "-c", fmt.Sprintf("echo hi | socat -T2 - UDP:%s:%d", addr, port))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// eventually retries fn until it returns true or a few seconds pass: servers in
// containers need a moment to start listening.
func eventually(fn func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fn() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) hostRun(args ...string) (string, error) { return e.host.Try(args...) }
func (e *env) wanRun(args ...string) (string, error)  { return e.wan.Try(args...) }
func (e *env) containerRun(name string) func(args ...string) (string, error) {
	return func(args ...string) (string, error) { return e.inContainer(name, args...) }
}

func pingOK(run func(args ...string) (string, error), addr string) bool {
	_, err := run("ping", "-c1", "-W1", addr)
	return err == nil
}
