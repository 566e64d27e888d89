package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/usernet"
)

// The test binary is also the rootless helper (re-executed by
// StartRootless) and the unprivileged driver that calls StartRootless as
// the test user inside a sandbox namespace. An init function, not TestMain,
// dispatches, so the package's other test files stay free to have one.
const rootlessTestDriverArg = "__ctnet-rootless-test-driver"

func init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case RootlessChildArg:
		RootlessChildMain()
	case rootlessTestDriverArg:
		os.Exit(runRootlessTestDriver(os.Stdin, os.Stdout))
	}
}

// driverScenario is what the driver is asked to do, as JSON on its command
// line.
type driverScenario struct {
	Argv              []string         `json:"argv"`
	Hostname          string           `json:"hostname,omitempty"`
	NoNetwork         bool             `json:"noNetwork,omitempty"`
	AllowHostLoopback bool             `json:"allowHostLoopback,omitempty"`
	Resolvers         []netip.AddrPort `json:"resolvers,omitempty"`
	Ports             []usernet.Port   `json:"ports,omitempty"`
	RuntimeDir        string           `json:"runtimeDir"`
	// Hold keeps the container running until the driver's stdin closes,
	// then sends it SIGTERM.
	Hold bool `json:"hold,omitempty"`
	// Exec is run with ExecRootless once the container runs.
	Exec []string `json:"exec,omitempty"`
}

// driverEvent is one JSON line of the driver's output.
type driverEvent struct {
	Event      string `json:"event"` // "ready" or "done"
	PID        int    `json:"pid,omitempty"`
	NetNS      uint64 `json:"netns,omitempty"` // its inode
	ExecOutput string `json:"execOutput,omitempty"`
	ExecCode   int    `json:"execCode,omitempty"`
	ExitCode   int    `json:"exitCode"`
	Output     string `json:"output,omitempty"`
	Err        string `json:"err,omitempty"`
	ErrIsTUN   bool   `json:"errIsTUN,omitempty"`
	Leaks      string `json:"leaks,omitempty"`
	LeftFiles  string `json:"leftFiles,omitempty"`
}

func runRootlessTestDriver(stdin io.Reader, stdout io.Writer) int {
	var sc driverScenario
	if err := json.Unmarshal([]byte(os.Args[2]), &sc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	enc := json.NewEncoder(stdout)
	// Warm up what lives for the whole process (poller, signal handling)
	// before the baseline.
	if wr, ww, err := os.Pipe(); err == nil {
		wr.Close()
		ww.Close()
	}
	base := lab.TakeBaseline()
	done := driverEvent{Event: "done"}
	defer func() { enc.Encode(done) }()

	outR, outW, err := os.Pipe()
	if err != nil {
		done.Err = err.Error()
		return 0
	}
	var output bytes.Buffer
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		io.Copy(&output, outR)
	}()
	spec := RootlessSpec{
		Argv:       sc.Argv,
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/"},
		Stdout:     outW,
		Stderr:     outW,
		Hostname:   sc.Hostname,
		RuntimeDir: sc.RuntimeDir,
	}
	if !sc.NoNetwork {
		if spec.Network, err = userNetwork(usernet.Config{AllowHostLoopback: sc.AllowHostLoopback, Resolvers: sc.Resolvers}, sc.Ports); err != nil {
			done.Err = err.Error()
			return 0
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := StartRootless(ctx, spec)
	outW.Close()
	if err != nil {
		<-outDone
		outR.Close()
		done.Err, done.ErrIsTUN = err.Error(), errors.Is(err, ErrTUNUnavailable)
		done.Leaks = leakReport(base)
		return 0
	}
	ready := driverEvent{Event: "ready", PID: c.PID()}
	ready.NetNS = proc.NetNSInode(fmt.Sprintf("/proc/%d/ns/net", c.PID()))
	if len(sc.Exec) > 0 {
		r, w, _ := os.Pipe()
		var execOut bytes.Buffer
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			io.Copy(&execOut, r)
		}()
		ready.ExecCode, err = ExecRootless(ctx, sc.RuntimeDir, sc.Exec, nil, nil, w, w)
		w.Close()
		<-copied
		r.Close()
		ready.ExecOutput = execOut.String()
		if err != nil {
			ready.ExecOutput += "\nexec error: " + err.Error()
		}
	}
	if sc.Hold {
		enc.Encode(ready)
		io.Copy(io.Discard, stdin)
		// SIGTERM reaches CMD directly: its PID is the host's.
		if p, err := os.FindProcess(c.PID()); err == nil {
			p.Signal(syscall.SIGTERM)
		}
	} else {
		enc.Encode(ready)
	}
	done.ExitCode, err = c.Wait()
	if err != nil {
		done.Err = err.Error()
	}
	<-outDone
	outR.Close()
	done.Output = output.String()
	done.PID, done.NetNS = ready.PID, ready.NetNS
	if entries, _ := os.ReadDir(sc.RuntimeDir); len(entries) > 0 {
		for _, e := range entries {
			done.LeftFiles += e.Name() + " "
		}
	}
	done.Leaks = leakReport(base)
	return 0
}

func leakReport(base lab.Baseline) string {
	if err := base.CheckLeaks(5 * time.Second); err != nil {
		return err.Error()
	}
	return ""
}

// rootlessRun is a driver started by a test.
type rootlessRun struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
	Ready driverEvent
}

// startRootless runs the driver as the test user inside sb and waits for
// its "ready" (or early "done") event.
func startRootless(t testing.TB, sb *lab.Sandbox, sc driverScenario) *rootlessRun {
	t.Helper()
	uid, gid := lab.TestUser(t)
	dir := lab.UserDir(t, uid, gid)
	exe := lab.ExecutableCopy(t, strings.TrimSuffix(dir, "/user"))
	sc.RuntimeDir = dir + "/run"
	arg, _ := json.Marshal(sc)
	args := append(sb.AsUser(uid, gid), exe, rootlessTestDriverArg, string(arg))
	cmd := sb.Command(context.Background(), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &rootlessRun{t: t, cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}
	r.lines.Buffer(make([]byte, 1<<20), 16<<20)
	t.Cleanup(func() {
		stdin.Close()
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
		if stderr.Len() > 0 {
			t.Logf("driver stderr: %s", stderr.String())
		}
	})
	r.Ready = r.next()
	return r
}

func (r *rootlessRun) next() driverEvent {
	r.t.Helper()
	if !r.lines.Scan() {
		r.cmd.Wait()
		r.t.Fatalf("driver ended without an event (%v)", r.cmd.ProcessState)
	}
	var ev driverEvent
	if err := json.Unmarshal(r.lines.Bytes(), &ev); err != nil {
		r.t.Fatalf("driver output %q: %v", r.lines.Text(), err)
	}
	return ev
}

// finish closes the driver's stdin (ending a held container), waits for
// its "done" event and checks that nothing of the container is left.
func (r *rootlessRun) finish() driverEvent {
	r.t.Helper()
	done := r.Ready
	if r.Ready.Event != "done" {
		r.stdin.Close()
		done = r.next()
	}
	if err := r.cmd.Wait(); err != nil {
		r.t.Errorf("driver: %v", err)
	}
	r.t.Logf("container exit %d, err %q, output:\n%s", done.ExitCode, done.Err, done.Output)
	if done.Leaks != "" {
		r.t.Errorf("driver process leaked after Wait: %s", done.Leaks)
	}
	if done.LeftFiles != "" {
		r.t.Errorf("runtime directory not empty after Wait: %s", done.LeftFiles)
	}
	if done.PID != 0 && proc.Running(done.PID) {
		r.t.Errorf("container process %d still exists", done.PID)
	}
	if done.NetNS != 0 {
		deadline := time.Now().Add(5 * time.Second)
		for proc.NetNSInUse(done.NetNS) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if proc.NetNSInUse(done.NetNS) {
			r.t.Errorf("container network namespace net:[%d] still in use", done.NetNS)
		}
	}
	return done
}

// serveHTTP answers every request with body on ln until cleanup.
func serveHTTP(t *testing.T, ln net.Listener, body string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// serveDNS answers A queries for name with addr on pc until cleanup.
func serveDNS(t *testing.T, pc net.PacketConn, name, addr string) {
	mux := dns.NewServeMux()
	mux.HandleFunc(name, func(w dns.ResponseWriter, q *dns.Msg) {
		var m dns.Msg
		m.SetReply(q)
		rr, _ := dns.NewRR(name + " 60 IN A " + addr)
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(&m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
}

// dnsQueryScript prints "DNS <address>" for the A record of its argument,
// asked of 10.0.2.3 over UDP.
const dnsQueryScript = `import socket, struct, sys
name = sys.argv[1]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, ("10.0.2.3", 53))
r = s.recv(512)
print("DNS", socket.inet_ntoa(r[-4:]))
`

func TestRootlessOutbound(t *testing.T) {
	sb := lab.NewSandbox(t)
	sb.AllowTUN(t)
	sb.Sysctl(t, "net.ipv4.ping_group_range", "0 2147483647")
	sb.AddLoopbackAddr(t, "198.51.100.1/32")
	serveHTTP(t, sb.ListenTCP(t, "198.51.100.1:8080"), "hello from the sandbox\n")
	serveDNS(t, sb.ListenUDP(t, "198.51.100.1:5353"), "probe.ctnet.test.", "192.0.2.55")
	echo := sb.ListenUDP(t, "198.51.100.1:7777")
	go func() {
		buf := make([]byte, 2048)
		for {
			n, peer, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(append([]byte("echo "), buf[:n]...), peer)
		}
	}()
	udpEcho := `import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b"udp-through-usernet", ("198.51.100.1", 7777))
print(s.recv(100).decode())
`

	script := "curl -sS --max-time 10 http://198.51.100.1:8080/ && " +
		"ping -c 2 -W 3 198.51.100.1 >/dev/null && echo PING-OK && " +
		"python3 -c '" + dnsQueryScript + "' probe.ctnet.test && " +
		"python3 -c '" + udpEcho + "' && " +
		"cat /proc/sys/kernel/hostname && ip -o link show tap0"
	run := startRootless(t, sb, driverScenario{
		Argv:      []string{"/bin/sh", "-c", script},
		Hostname:  "rootless-probe",
		Resolvers: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:5353")},
	})
	done := run.finish()
	if done.Err != "" || done.ExitCode != 0 {
		t.Fatalf("container failed: exit %d, err %q, output:\n%s", done.ExitCode, done.Err, done.Output)
	}
	for _, want := range []string{"hello from the sandbox", "PING-OK", "DNS 192.0.2.55", "echo udp-through-usernet", "rootless-probe", "mtu 65520"} {
		if !strings.Contains(done.Output, want) {
			t.Errorf("output lacks %q:\n%s", want, done.Output)
		}
	}
}

func TestRootlessHostLoopback(t *testing.T) {
	for _, tc := range []struct {
		name  string
		allow bool
		want  string
	}{
		{"blocked by default", false, "REFUSED"},
		{"allowed maps gateway to 127.0.0.1", true, "hello from host loopback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb := lab.NewSandbox(t)
			sb.AllowTUN(t)
			serveHTTP(t, sb.ListenTCP(t, "127.0.0.1:8081"), "hello from host loopback\n")
			run := startRootless(t, sb, driverScenario{
				Argv:              []string{"/bin/sh", "-c", "curl -sS --max-time 5 http://10.0.2.2:8081/ || echo REFUSED $?"},
				AllowHostLoopback: tc.allow,
			})
			done := run.finish()
			if done.Err != "" {
				t.Fatalf("container failed: %s", done.Err)
			}
			if !strings.Contains(done.Output, tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, done.Output)
			}
			// Refused at once (reset), not after curl's timeout (exit 28).
			if !tc.allow && !strings.Contains(done.Output, "REFUSED 7") {
				t.Errorf("connection to the gateway was not refused:\n%s", done.Output)
			}
		})
	}
}

// peerServerScript serves TCP 8080 and UDP 5353 inside the container and
// answers each client with the address it sees.
const peerServerScript = `import socket, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 8080)); t.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
def udp():
    while True:
        data, peer = u.recvfrom(2048)
        u.sendto(("peer=%s:%d" % peer).encode(), peer)
threading.Thread(target=udp, daemon=True).start()
while True:
    c, peer = t.accept()
    c.recv(1024)
    c.sendall(("HTTP/1.0 200 OK\r\n\r\npeer=%s:%d\n" % peer).encode())
    c.close()
`

func TestRootlessPublishedPorts(t *testing.T) {
	sb := lab.NewSandbox(t)
	sb.AllowTUN(t)
	sb.AddLoopbackAddr(t, "198.51.100.1/32")
	sb.AddLoopbackAddr(t, "198.51.100.7/32")
	run := startRootless(t, sb, driverScenario{
		Argv:     []string{"python3", "-c", peerServerScript},
		Hostname: "published",
		Ports: []usernet.Port{
			{Proto: "tcp", HostIP: netip.MustParseAddr("198.51.100.1"), HostPort: 18080, ContainerPort: 8080},
			{Proto: "udp", HostPort: 15353, ContainerPort: 5353},
		},
		Hold: true,
		Exec: []string{"/bin/sh", "-c", "hostname; ip link show tap0 >/dev/null && echo HAS-TAP0"},
	})
	if run.Ready.Event != "ready" {
		t.Fatalf("container did not start: %s", run.Ready.Err)
	}
	for _, want := range []string{"published", "HAS-TAP0"} {
		if !strings.Contains(run.Ready.ExecOutput, want) {
			t.Errorf("exec output lacks %q: %q", want, run.Ready.ExecOutput)
		}
	}

	var tcpOut string
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := sb.Command(context.Background(), "curl", "-sS", "--max-time", "3",
			"--interface", "198.51.100.7", "http://198.51.100.1:18080/").CombinedOutput()
		if tcpOut = string(out); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(tcpOut, "peer=198.51.100.7:") {
		t.Errorf("published tcp port: container did not see the client's address: %q", tcpOut)
	}

	udpClient := `import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.7", 40053)); s.settimeout(3)
s.sendto(b"hi", ("198.51.100.1", 15353))
print(s.recv(100).decode())
`
	udpOut := sb.MustRun(t, "python3", "-c", udpClient)
	if !strings.Contains(udpOut, "peer=198.51.100.7:40053") {
		t.Errorf("published udp port: container did not see the client's address: %q", udpOut)
	}
	done := run.finish()
	if done.Err != "" {
		t.Errorf("wait: %s", done.Err)
	}
}

func TestRootlessTUNForbidden(t *testing.T) {
	sb := lab.NewSandbox(t)
	sb.DenyTUN(t)
	run := startRootless(t, sb, driverScenario{Argv: []string{"/bin/true"}})
	done := run.finish()
	if !done.ErrIsTUN || !strings.Contains(done.Err, "chmod 0666 /dev/net/tun") {
		t.Errorf("error = %q, want ErrTUNUnavailable naming chmod 0666 /dev/net/tun", done.Err)
	}
}

func TestRootlessNetworkNoneExitCode(t *testing.T) {
	sb := lab.NewSandbox(t)
	run := startRootless(t, sb, driverScenario{
		Argv:      []string{"/bin/sh", "-c", "ip -o link; exit 7"},
		NoNetwork: true,
	})
	done := run.finish()
	if done.ExitCode != 7 || done.Err != "" {
		t.Errorf("exit %d err %q, want 7", done.ExitCode, done.Err)
	}
	if strings.Contains(done.Output, "tap0") {
		t.Errorf("network none has tap0: %s", done.Output)
	}
}

// userNetwork is what ctnet's front end gives a rootless container: usernet's
// stack, laid out as cfg says, with ports published.
func userNetwork(cfg usernet.Config, ports []usernet.Port) (*UserNetwork, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	n := &UserNetwork{MTU: cfg.MTU, Address: netip.PrefixFrom(cfg.Guest, cfg.Subnet.Bits()), Gateway: cfg.Gateway}
	for _, p := range ports {
		n.Published = append(n.Published, GuestPort{Proto: p.Proto, Port: p.ContainerPort})
	}
	n.Start = func(tap *os.File, newInner func(proto string) (*os.File, error)) (io.Closer, error) {
		cfg.TAP = tap
		s, err := usernet.Start(cfg)
		if err != nil {
			return nil, err
		}
		for _, p := range ports {
			if err := s.Publish(p, newInner); err != nil {
				s.Close()
				return nil, err
			}
		}
		return s, nil
	}
	return n, nil
}

func TestSubIDRangesAndMapArgs(t *testing.T) {
	path := t.TempDir() + "/subuid"
	os.WriteFile(path, []byte("alice:100000:65536\n1001:300000:10\nbob:200000:65536\nbad line\nalice:500000:5\n"), 0o600)
	for _, tc := range []struct {
		name string
		user string
		id   int
		want string
	}{
		{"by name, two ranges", "alice", 1000, "0 1000 1 1 100000 65536 65537 500000 5"},
		{"by numeric id", "carol", 1001, "0 1001 1 1 300000 10"},
		{"none", "dave", 1002, "0 1002 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ranges, err := subIDRanges(path, tc.user, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(idMapArgs(tc.id, ranges), " "); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
