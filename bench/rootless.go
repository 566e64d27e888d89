package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/undo"
)

// The rootless workload, as sandbox/rootless_bench_test.go and the peers' script run
// it: servers on the sandbox host's loopback (reached from inside through the
// gateway 10.0.2.2, which every tool maps to the host's 127.0.0.1), servers inside
// the container (reached through a port published on the host's 127.0.0.1), all
// driven by the unprivileged user.
const (
	rootlessUser     = "ctnettest"
	rootlessGateway  = "10.0.2.2"
	hostIperfPort    = 5301
	hostPingPongPort = 5302
)

// Rootless path names.
const (
	pathOut       = "out: container → host loopback via gateway"
	pathIn        = "in: host loopback → container (iperf3 -R)"
	pathSpliceOut = "out: container 127.0.0.1 → host loopback (pasta -T splice)"
	pathPublished = "published port: host 127.0.0.1 → container"
)

// rootlessUserIDs returns the test user's uid and gid, creating the user with
// subordinate ids as .ci/run does when it is missing.
func rootlessUserIDs(ctx context.Context) (int, int, error) {
	if _, err := user.Lookup(rootlessUser); err != nil {
		if out, err := exec.CommandContext(ctx, "useradd", "--uid", "1001", "--user-group", "--no-create-home",
			"--shell", "/usr/sbin/nologin", rootlessUser).CombinedOutput(); err != nil {
			return 0, 0, fmt.Errorf("useradd %s: %v: %s", rootlessUser, err, out)
		}
		for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
			if err := appendLine(f, rootlessUser+":400000:65536"); err != nil {
				return 0, 0, err
			}
		}
	}
	u, err := user.Lookup(rootlessUser)
	if err != nil {
		return 0, 0, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// allowTUN makes /dev/net/tun usable by unprivileged users (0666, as Debian's udev
// rule would; this machine has no udev) and restores the original mode at cleanup.
// It holds a lock, so that two benchmark runs never restore the mode under each
// other. (The tests leave the device alone: they bind a node of their own over it.)
func allowTUN(ctx context.Context, clean *undo.Stack) error {
	lock, err := os.OpenFile("/run/ctnet-test-tun.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	for unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		select {
		case <-ctx.Done():
			lock.Close()
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	clean.Push("/dev/net/tun lock", lock.Close)
	st, err := os.Stat("/dev/net/tun")
	if err != nil {
		return err
	}
	mode := st.Mode().Perm()
	if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
		return err
	}
	clean.Push("/dev/net/tun mode", func() error { return os.Chmod("/dev/net/tun", mode) })
	return nil
}

// rootlessLab is the sandbox host and the user who drives every tool in it.
type rootlessLab struct {
	env    *benchEnv
	host   *nsThread
	asUser []string // prefix running a command as the unprivileged user
	dir    string   // owned by the user
}

func runRootlessSection(ctx context.Context, env *benchEnv, res *results) (err error) {
	mark := env.clean.Mark()
	defer func() { err = errors.Join(err, env.clean.UnwindTo(mark)) }()
	uid, gid, err := rootlessUserIDs(ctx)
	if err != nil {
		return err
	}
	if err := allowTUN(ctx, env.clean); err != nil {
		return err
	}
	l, err := newLab(ctx, env.clean)
	if err != nil {
		return err
	}
	rl := &rootlessLab{env: env, host: l.host, asUser: []string{"setpriv", "--reuid=" + strconv.Itoa(uid),
		"--regid=" + strconv.Itoa(gid), "--init-groups", "--reset-env", "env", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}}
	if rl.dir, err = os.MkdirTemp(env.tmp, "rootless-"); err != nil {
		return err
	}
	env.clean.Push("rootless directory", func() error { return os.RemoveAll(rl.dir) })
	if err := os.Chown(rl.dir, uid, gid); err != nil {
		return err
	}
	if _, err := background(env.clean, l.host, "iperf3", "-s", "-B", "127.0.0.1", "-p", strconv.Itoa(hostIperfPort)); err != nil {
		return err
	}
	ln, err := l.host.listen("127.0.0.1:" + strconv.Itoa(hostPingPongPort))
	if err != nil {
		return err
	}
	env.clean.Push("ping-pong listener", ln.Close)
	go servePingPong(ln)
	if err := waitListening(ctx, l.host, "127.0.0.1:"+strconv.Itoa(hostIperfPort)); err != nil {
		return err
	}
	for _, tool := range []struct {
		name string
		run  func(context.Context, *rootlessLab) ([]pathResult, error)
	}{{"ctnet", rootlessCtnet}, {"slirp4netns", rootlessSlirp}, {"pasta", rootlessPasta}} {
		paths, err := tool.run(ctx, rl)
		if err != nil {
			res.Errors = append(res.Errors, "rootless "+tool.name+": "+err.Error())
			fmt.Fprintf(os.Stderr, "   rootless %s failed: %v\n", tool.name, err)
		}
		res.Rootless = append(res.Rootless, paths...)
	}
	compareRootless(res.Rootless)
	return nil
}

// rootlessProbes are the paths every rootless tool is measured on; inside runs a
// client in the container, hostIperf and hostPingPong are the published ports.
func rootlessProbes(rl *rootlessLab, tool string, inside []string, hostIperf, hostPingPong int) []pathProbe {
	return []pathProbe{
		{path: pathOut, tool: tool, from: rl.host, prefix: inside, host: rootlessGateway, iperf: hostIperfPort, pingPong: hostPingPongPort},
		{path: pathIn, tool: tool, from: rl.host, prefix: inside, host: rootlessGateway, iperf: hostIperfPort, reverse: true},
		{path: pathPublished, tool: tool, from: rl.host, host: "127.0.0.1", iperf: hostIperf, pingPong: hostPingPong},
	}
}

// compareRootless sets ctnet's ratios against the targets: outbound and inbound
// against slirp4netns, the published port against pasta.
func compareRootless(paths []pathResult) {
	find := func(tool, path string) *pathResult {
		for k := range paths {
			if paths[k].Tool == tool && paths[k].Path == path {
				return &paths[k]
			}
		}
		return nil
	}
	for path, refTool := range map[string]string{pathOut: "slirp4netns", pathIn: "slirp4netns", pathPublished: "pasta"} {
		c, ref := find("ctnet", path), find(refTool, path)
		if c == nil || ref == nil {
			continue
		}
		c.Reference, c.RefTool = path, refTool
		c.GbpsRatio, c.RTTRatio = c.Gbps/ref.Gbps, c.RTTus/ref.RTTus
	}
}

// rootlessCtnet measures ctnet's rootless network through its CLI, run by the
// unprivileged user: `run -d` with two ports published on the host's 127.0.0.1,
// clients inside through `exec`, and `rm -f` at the end.
func rootlessCtnet(ctx context.Context, rl *rootlessLab) (paths []pathResult, err error) {
	const publishedIperf, publishedPingPong = 5401, 5402
	ctnet := commandLine(rl.asUser, rl.env.ctnet, "--root", filepath.Join(rl.dir, "ctnet"))
	run := commandLine(ctnet, "run", "-d", "--name", "bench", "--allow-host-loopback",
		"-p", fmt.Sprintf("127.0.0.1:%d:%d", publishedIperf, iperfPort),
		"-p", fmt.Sprintf("127.0.0.1:%d:%d", publishedPingPong, pingPongPort),
		"--", "iperf3", "-s", "-p", strconv.Itoa(iperfPort))
	if _, err := rl.host.run(ctx, nil, nil, run...); err != nil {
		return nil, err
	}
	defer func() {
		if _, rmErr := rl.host.run(context.WithoutCancel(ctx), nil, nil, commandLine(ctnet, "rm", "-f", "bench")...); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
	}()
	inside := commandLine(ctnet, "exec", "bench", "--")
	if _, err := background(rl.env.clean, rl.host, commandLine(inside, rl.env.self, pingPongServerArg, ":"+strconv.Itoa(pingPongPort))...); err != nil {
		return nil, err
	}
	if err := waitListening(ctx, rl.host, "127.0.0.1:"+strconv.Itoa(publishedPingPong)); err != nil {
		return nil, err
	}
	return measurePaths(ctx, rl.env, rootlessProbes(rl, "ctnet", inside, publishedIperf, publishedPingPong)), nil
}

// userNamespace starts `sleep` in a new user and network namespace as the user,
// the way the peers' script prepares a namespace for slirp4netns and pasta, and
// returns its PID and the prefix that runs a command inside it.
func userNamespace(ctx context.Context, rl *rootlessLab) (int, []string, error) {
	holder, err := background(rl.env.clean, rl.host, commandLine(rl.asUser, "unshare", "--user", "--map-root-user", "--net", "sleep", "1000000")...)
	if err != nil {
		return 0, nil, err
	}
	pid := holder.Process.Pid
	mine, _ := os.Readlink("/proc/self/ns/user")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
		if strings.TrimSpace(string(comm)) == "sleep" && ns != mine {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, nil, errors.New("the user namespace did not come up")
		}
	}
	inside := commandLine(rl.asUser, "nsenter", "-t", strconv.Itoa(pid), "-U", "-n", "--preserve-credentials")
	return pid, inside, nil
}

// waitAddress waits until dev has an IPv4 address inside the namespace.
func waitAddress(ctx context.Context, rl *rootlessLab, inside []string, dev string) error {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _ := rl.host.run(ctx, nil, nil, commandLine(inside, "ip", "-4", "addr", "show", "dev", dev)...)
		if strings.Contains(string(out), "inet ") {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s got no address", dev)
		}
	}
}

// serveInside starts the iperf3 and ping-pong servers inside a peer's namespace.
func serveInside(rl *rootlessLab, inside []string) error {
	if _, err := background(rl.env.clean, rl.host, commandLine(inside, "iperf3", "-s", "-p", strconv.Itoa(iperfPort))...); err != nil {
		return err
	}
	_, err := background(rl.env.clean, rl.host, commandLine(inside, rl.env.self, pingPongServerArg, ":"+strconv.Itoa(pingPongPort))...)
	return err
}

func rootlessSlirp(ctx context.Context, rl *rootlessLab) ([]pathResult, error) {
	const publishedIperf, publishedPingPong = 5411, 5412
	mark := rl.env.clean.Mark()
	defer rl.env.clean.UnwindTo(mark)
	pid, inside, err := userNamespace(ctx, rl)
	if err != nil {
		return nil, err
	}
	api := filepath.Join(rl.dir, "slirp.sock")
	if _, err := background(rl.env.clean, rl.host, commandLine(rl.asUser, "slirp4netns",
		"--configure", "--mtu=65520", "--api-socket", api, strconv.Itoa(pid), "tap0")...); err != nil {
		return nil, err
	}
	if err := waitAddress(ctx, rl, inside, "tap0"); err != nil {
		return nil, err
	}
	if err := serveInside(rl, inside); err != nil {
		return nil, err
	}
	for _, fwd := range [][2]int{{publishedIperf, iperfPort}, {publishedPingPong, pingPongPort}} {
		if err := slirpHostForward(api, fwd[0], fwd[1]); err != nil {
			return nil, err
		}
	}
	if err := waitListening(ctx, rl.host, "127.0.0.1:"+strconv.Itoa(publishedPingPong)); err != nil {
		return nil, err
	}
	return measurePaths(ctx, rl.env, rootlessProbes(rl, "slirp4netns", inside, publishedIperf, publishedPingPong)), nil
}

// slirpHostForward asks slirp4netns, over its API socket, to forward the host's
// 127.0.0.1:hostPort to the namespace's guestPort.
func slirpHostForward(api string, hostPort, guestPort int) error {
	c, err := net.Dial("unix", api)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(c, `{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":%d,"guest_port":%d}}`, hostPort, guestPort)
	reply, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !strings.Contains(string(reply), `"return"`) {
		return fmt.Errorf("slirp4netns add_hostfwd: %s", reply)
	}
	return nil
}

func rootlessPasta(ctx context.Context, rl *rootlessLab) ([]pathResult, error) {
	const publishedIperf, publishedPingPong = 5421, 5422
	mark := rl.env.clean.Mark()
	defer rl.env.clean.UnwindTo(mark)
	pid, inside, err := userNamespace(ctx, rl)
	if err != nil {
		return nil, err
	}
	if _, err := background(rl.env.clean, rl.host, commandLine(rl.asUser, "pasta", "-f", "-q",
		"--config-net", "-a", "10.0.2.100", "-n", "24", "-g", rootlessGateway, "-I", "eth0",
		"-t", fmt.Sprintf("127.0.0.1/%d:%d", publishedIperf, iperfPort),
		"-t", fmt.Sprintf("127.0.0.1/%d:%d", publishedPingPong, pingPongPort),
		"-T", fmt.Sprintf("%d,%d", hostIperfPort, hostPingPongPort), "-u", "none", "-U", "none", strconv.Itoa(pid))...); err != nil {
		return nil, err
	}
	if err := waitAddress(ctx, rl, inside, "eth0"); err != nil {
		return nil, err
	}
	if err := serveInside(rl, inside); err != nil {
		return nil, err
	}
	if err := waitListening(ctx, rl.host, "127.0.0.1:"+strconv.Itoa(publishedPingPong)); err != nil {
		return nil, err
	}
	probes := rootlessProbes(rl, "pasta", inside, publishedIperf, publishedPingPong)
	probes = append(probes, pathProbe{path: pathSpliceOut, tool: "pasta", from: rl.host, prefix: inside,
		host: "127.0.0.1", iperf: hostIperfPort, pingPong: hostPingPongPort})
	return measurePaths(ctx, rl.env, probes), nil
}
