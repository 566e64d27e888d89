package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/proc"
)

// userEnv is a sandbox where ctnet runs as the unprivileged test user.
type userEnv struct {
	t        *testing.T
	host     *lab.Sandbox
	uid, gid int
	dirs     []string // XDG_DATA_HOME, XDG_RUNTIME_DIR
}

func newUserEnv(t *testing.T) *userEnv {
	t.Helper()
	lab.RequireRoot(t)
	lab.TestUser(t)
	return newUserEnvIn(t, lab.NewSandbox(t))
}

// newUserEnvIn is newUserEnv in a sandbox the test already has, which a rootful
// root may share.
func newUserEnvIn(t *testing.T, host *lab.Sandbox) *userEnv {
	t.Helper()
	uid, gid := lab.TestUser(t)
	u := &userEnv{t: t, host: host, uid: uid, gid: gid}
	u.host.AllowTUN(t)
	home := lab.UserDir(t, uid, gid)
	u.dirs = []string{"HOME=" + home, "XDG_DATA_HOME=" + filepath.Join(home, "data"), "XDG_RUNTIME_DIR=" + filepath.Join(home, "run")}
	for _, d := range []string{"data", "run"} {
		p := filepath.Join(home, d)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, uid, gid)
	}
	u.host.Sysctl(t, "net.ipv4.ping_group_range", "0 2147483647")
	bin, helper := lab.Binary(t), lab.UserNetHelper(t)
	left := func() []int { return append(proc.OfExecutable(bin), proc.OfExecutable(helper)...) }
	t.Cleanup(func() {
		if r := u.ctnet("ps", "-a", "-q"); strings.TrimSpace(r.Stdout) != "" {
			t.Errorf("containers left by the test: %s", r.Stdout)
			u.ctnet(append([]string{"rm", "-f"}, strings.Fields(r.Stdout)...)...)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(left()) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if pids := left(); len(pids) > 0 {
			t.Errorf("ctnet processes left running: %v", pids)
		}
		containers := filepath.Join(home, "run", "ctnet", "containers")
		if entries, _ := os.ReadDir(containers); len(entries) > 0 {
			t.Errorf("runtime files left in %s: %v", containers, entries)
		}
	})
	return u
}

func (u *userEnv) command(ctx context.Context, args ...string) *exec.Cmd {
	prefix := u.host.AsUser(u.uid, u.gid, u.dirs...)
	return u.host.Command(ctx, append(append(prefix, lab.Binary(u.t)), args...)...)
}

func (u *userEnv) ctnet(args ...string) lab.Result {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := u.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := lab.Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("run ctnet %v: %v", args, err)
	}
	return r
}

func (u *userEnv) must(args ...string) string {
	u.t.Helper()
	r := u.ctnet(args...)
	if r.Code != 0 {
		u.t.Fatalf("ctnet %v as %s: %s", args, lab.TestUserName, r)
	}
	return r.Stdout
}

// A rootless container reaches a sandbox server over HTTP, pings it, and resolves a
// name through 10.0.2.3 with a resolver the test runs: with the C library, which
// reads the container's resolv.conf, and with a query sent to 10.0.2.3 by hand.
func TestRootlessWayOut(t *testing.T) {
	u := newUserEnv(t)
	u.host.AddLoopbackAddr(t, "198.51.100.10/32")
	web := u.host.ListenTCP(t, "198.51.100.10:8080")
	go serveHTTP(web, "hello from the sandbox")
	resolver := u.host.ListenUDP(t, "198.51.100.10:5353")
	go serveDNS(resolver, "svc.test.", "198.51.100.77")
	r := u.ctnet("run", "--rm", "--dns", "198.51.100.10:5353", "--", "sh", "-c",
		"curl -s -m5 http://198.51.100.10:8080/; echo; ping -c1 -W2 198.51.100.10 >/dev/null && echo PING-OK; "+
			"getent ahostsv4 svc.test | sed -n 's/ .*//;1s/^/RESOLVED /p'; "+
			"python3 -c 'import socket,struct,sys\n"+
			"q=struct.pack(\"!HHHHHH\",7,0x100,1,0,0,0)+b\"\\x03svc\\x04test\\x00\"+struct.pack(\"!HH\",1,1)\n"+
			"s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);s.sendto(q,(\"10.0.2.3\",53))\n"+
			"r=s.recv(512);print(\"DNS\",socket.inet_ntoa(r[-4:]))'")
	if r.Code != 0 {
		t.Fatalf("rootless run: %s", r)
	}
	for _, want := range []string{"hello from the sandbox", "PING-OK", "RESOLVED 198.51.100.77\n", "DNS 198.51.100.77"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("rootless container output lacks %q:\n%s", want, r)
		}
	}
}

func serveHTTP(ln net.Listener, body string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 4096)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.Read(buf)
			fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}()
	}
}

// serveDNS answers queries for name with an A record holding addr, and others with
// an empty reply, until pc is closed.
func serveDNS(pc net.PacketConn, name, addr string) {
	answerDNS(pc, addr, func(q dns.Question) bool { return q.Name == name })
}

// answerDNS serves DNS on pc until it is closed: an A record holding addr for each
// question answer accepts, an empty reply for the others.
func answerDNS(pc net.PacketConn, addr string, answer func(dns.Question) bool) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var q dns.Msg
		if q.Unpack(buf[:n]) != nil || len(q.Question) == 0 {
			continue
		}
		resp := new(dns.Msg)
		resp.SetReply(&q)
		if answer(q.Question[0]) {
			resp.Answer = append(resp.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.ParseIP(addr)})
		}
		out, _ := resp.Pack()
		pc.WriteTo(out, from)
	}
}

// A port published rootless answers the sandbox host, and the server in the
// container sees the client's true address; after rm nothing of it remains.
func TestRootlessPublishedPort(t *testing.T) {
	u := newUserEnv(t)
	u.host.AddLoopbackAddr(t, "198.51.100.20/32")
	u.must(append([]string{"run", "-d", "--name", "srv", "-p", "8085:8000", "--"}, peerServer(8000)...)...)
	client := func(args ...string) (string, error) {
		return u.host.Try(args...)
	}
	var seen string
	ok := eventually(func() bool {
		out, err := client("socat", "-T2", "-", "TCP:127.0.0.1:8085,bind=198.51.100.20")
		seen = strings.TrimSpace(out)
		return err == nil && seen != ""
	})
	if !ok {
		t.Fatalf("the published port does not answer")
	}
	if seen != "198.51.100.20" {
		t.Errorf("the server saw the client as %q, want its true address 198.51.100.20", seen)
	}
	if r := u.ctnet("exec", "srv", "--", "ip", "-o", "-4", "addr", "show", "tap0"); r.Code != 0 || !strings.Contains(r.Stdout, "10.0.2.100/24") {
		t.Errorf("exec in a rootless container: %s", r)
	}
	if out := u.must("ps"); !strings.Contains(out, "0.0.0.0:8085->8000/tcp") || !strings.Contains(out, "10.0.2.100") {
		t.Errorf("ps does not show the rootless container's port and address:\n%s", out)
	}
	pid := u.inspectPID("srv")
	if !proc.Running(pid) {
		t.Fatalf("the running container's process %d does not exist", pid)
	}
	u.must("stop", "srv")
	if proc.Running(pid) {
		t.Errorf("the container's process %d survived stop", pid)
	}
	u.must("rm", "srv")
}

func (u *userEnv) inspectPID(name string) int {
	u.t.Helper()
	var c container
	e := &env{t: u.t}
	e.decodeInspected(u.must("inspect", "--format", "json", name), &c)
	return c.Process.PID
}

// none, container:NAME and logs work rootless, as for root.
func TestRootlessModes(t *testing.T) {
	u := newUserEnv(t)
	u.must("run", "-d", "--name", "base", "--", "sleep", "600")
	cases := []struct{ mode, want, absent string }{
		{"none", "lo", "tap0"},
		{"container:base", "tap0", ""},
	}
	for _, c := range cases {
		r := u.ctnet("run", "--rm", "--network", c.mode, "--", "ip", "-o", "link")
		if r.Code != 0 || !strings.Contains(r.Stdout, c.want) || (c.absent != "" && strings.Contains(r.Stdout, c.absent)) {
			t.Errorf("--network %s: want %s and not %q inside, got %s", c.mode, c.want, c.absent, r)
		}
	}
	u.must("rm", "-f", "base")
	u.must("run", "-d", "--name", "talker", "--", "sh", "-c", "echo out; echo err >&2")
	if r := u.ctnet("logs", "-f", "talker"); r.Code != 0 || r.Stdout != "out\n" || r.Stderr != "err\n" {
		t.Errorf("logs -f of a rootless container: want \"out\\n\" on stdout and \"err\\n\" on stderr, got %s", r)
	}
	u.must("rm", "talker")
}

// When /dev/net/tun cannot be opened, and when ping is not permitted, the user is
// told which setting to change.
func TestRootlessClearErrors(t *testing.T) {
	u := newUserEnv(t)
	u.host.Sysctl(t, "net.ipv4.ping_group_range", "1 0")
	u.host.AddLoopbackAddr(t, "198.51.100.30/32")
	r := u.ctnet("run", "--rm", "--", "ping", "-c1", "-W2", "198.51.100.30")
	if !strings.Contains(r.Stderr, "ping_group_range") {
		t.Errorf("ping without ping_group_range: want a message naming net.ipv4.ping_group_range, got %s", r)
	}
	u.host.DenyTUN(t)
	r = u.ctnet("run", "--rm", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "/dev/net/tun") || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
		t.Errorf("with /dev/net/tun 0600: want one line naming /dev/net/tun, got %s", r)
	}
}
