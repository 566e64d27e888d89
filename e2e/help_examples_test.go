package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// helpExample is one line of a command's Examples, as --help prints it, run in a lab:
// its exit status and what its output holds.
type helpExample struct {
	line string
	code int
	out  string // what stdout and stderr together hold
	// input, when set, is typed at a terminal the example runs under (script).
	input string
	// background runs the example while the steps after it run, until one of them
	// ends it; its status and output are checked then (see wait).
	background bool
}

// TestHelpExamples runs every example every command's --help shows, as written, in
// one scenario: the steps between them (setup) are what the examples take for
// granted (a network called backend, a container called web). ctnet is on PATH as
// a user has it, with the test's root; redis-server, which the machine lacks, is a
// stand-in that sleeps. An example the scenario does not know fails the test, so
// that a new one is run too.
func TestHelpExamples(t *testing.T) {
	e := newEnv(t)
	e.host.Boot = lab.NewBoot(t) // ip netns add makes its pin in the boot's /run/netns
	e.before = e.host.Snapshot(t, e.root)
	bin := t.TempDir()
	for name, script := range map[string]string{
		"ctnet":        "#!/bin/sh\nexec " + lab.Binary(t) + " --root " + e.root + " \"$@\"\n",
		"redis-server": "#!/bin/sh\nexec sleep infinity\n",
	} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir() // where graph -o writes
	environ := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "TERM=xterm")
	command := func(line, input string) *exec.Cmd {
		cmd := e.host.Command(context.Background(), "sh", "-c", "cd "+dir+" && "+line)
		if input != "" {
			cmd = e.host.Command(context.Background(), "script", "-qec", "cd "+dir+" && "+line, "/dev/null")
			cmd.Stdin = strings.NewReader(input)
		}
		cmd.Env = environ
		return cmd
	}
	check := func(ex helpExample, cmd *exec.Cmd, out *bytes.Buffer, err error) {
		code := 0
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: %v", ex.line, err)
		}
		if code != ex.code || !strings.Contains(out.String(), ex.out) {
			t.Errorf("help example %s: exit %d, output\n%s\nwant exit %d and output holding %q", ex.line, code, out, ex.code, ex.out)
		}
	}
	setup := func(line string) {
		t.Helper()
		if out, err := command(line, "").CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
	}
	var ran []string
	var background []func()
	run := func(ex helpExample) {
		t.Helper()
		ran = append(ran, ex.line)
		cmd := command(ex.line, ex.input)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if !ex.background {
			check(ex, cmd, &out, cmd.Run())
			return
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", ex.line, err)
		}
		background = append(background, func() { check(ex, cmd, &out, cmd.Wait()) })
	}
	// wait checks the examples running in the background, which the steps before
	// ended.
	wait := func() {
		for _, b := range background {
			b()
		}
		background = nil
	}

	e.host.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer") // macvlan's --parent eth0
	defer e.host.MustRun(t, "ip", "link", "del", "eth0")
	e.host.MustRun(t, "ip", "link", "set", "eth0", "up")
	for _, ex := range []struct{ line, name string }{ // each prints the network's ID
		{"ctnet network create web", "web"},
		{"ctnet network create routed --subnet 10.99.0.0/24 --opt masquerade=false", "routed"},
		{"ctnet network create pods --subnet 10.244.1.0/24 --opt non-masquerade=10.244.0.0/16", "pods"},
		{"ctnet network create lan -d macvlan --parent eth0 --subnet 192.168.1.0/24 --gateway 192.168.1.1 --ip-range 192.168.1.192/27", "lan"},
		{"ctnet network create dual --ipv6", "dual"},
		{"ctnet network create dual2 --ipv6 --subnet 172.30.0.0/24 --subnet 2001:db8:30::/64", "dual2"},
		{"ctnet network create v6only --ipv6 --ipv4=false", "v6only"},
		{"ctnet network create apart --opt icc=false", "apart"},
	} {
		run(helpExample{line: ex.line})
		setup("ctnet network rm " + ex.name)
	}
	run(helpExample{line: "ctnet network create backend --subnet 172.30.0.0/24 --internal"})
	backendID := strings.TrimSpace(e.must("network", "inspect", "-f", "{{.Id}}", "backend"))[:12]
	run(helpExample{line: "ctnet network ls -q --filter type=custom", out: backendID})
	run(helpExample{line: "ctnet network ls --format '{{.Name}} {{.Subnet}}'", out: "backend 172.30.0.0/24"})

	run(helpExample{line: "ctnet run --network none -- ip addr", out: "lo: <LOOPBACK,UP,LOWER_UP>"})
	run(helpExample{line: "ctnet run -it --rm -e TERM -w /tmp -- sh", input: "echo term=$TERM; pwd; exit\n", out: "term=xterm\r\n/tmp\r\n"})
	run(helpExample{line: "ctnet run -d --name db --network backend --ip 172.30.0.10 -l env=test -- redis-server"})
	if ip := e.ip("db"); ip != "172.30.0.10" {
		t.Errorf("db has the address %s, its example asks 172.30.0.10", ip)
	}
	// The foreground server runs until stopped, as a user's Ctrl-C would end it.
	run(helpExample{line: "ctnet run --name web -p 8080:80 -- python3 -m http.server 80", background: true, code: 143})
	if !eventually(func() bool { _, err := e.hostRun("curl", "-sf", "http://127.0.0.1:8080/"); return err == nil }) {
		t.Errorf("the example's web server never answered on 127.0.0.1:8080")
	}
	setup("ctnet stop web")
	wait()
	setup("ctnet rm web")

	setup("ctnet run -d --name web -p 8080:80 -- python3 -m http.server 80")
	if !eventually(func() bool { _, err := e.hostRun("curl", "-sf", "http://127.0.0.1:8080/"); return err == nil }) {
		t.Fatalf("web never answered on 127.0.0.1:8080")
	}
	webIP := e.ip("web")
	run(helpExample{line: "ctnet inspect -f '{{.NetworkSettings.IPAddress}}' web", out: webIP + "\n"})
	run(helpExample{line: "ctnet inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' web", out: webIP + " \n"})
	run(helpExample{line: "ctnet inspect -f '{{.State.Status}} {{.State.Pid}}' web db", out: fmt.Sprintf("running %d\nrunning %d\n", e.inspect("web").Process.PID, e.inspect("db").Process.PID)})
	run(helpExample{line: "ctnet inspect -f '{{json .}}' web", out: `"IPAddress":"` + webIP + `"`})
	setup("ctnet network create demo --subnet 10.93.0.0/24 && ctnet network connect demo db")
	run(helpExample{line: "ctnet network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' demo", out: "10.93.0.0/24\n"})
	run(helpExample{line: "ctnet network inspect -f '{{range .Containers}}{{.Name}} {{.IPv4Address}} {{end}}' demo", out: "db 10.93.0.2/24 \n"})
	run(helpExample{line: "ctnet exec web -- ip addr", out: "eth0@"})
	run(helpExample{line: "ctnet exec -it -u 1000 -w /tmp web -- sh", input: "id -u; pwd; exit\n", out: "1000\r\n/tmp\r\n"})
	run(helpExample{line: "ctnet port web", out: "80/tcp -> 0.0.0.0:8080\n"})
	run(helpExample{line: "ctnet port web 80/tcp", out: "0.0.0.0:8080\n"})
	run(helpExample{line: "ctnet ps -a --filter status=exited --filter name=web", out: "CONTAINER ID"})
	run(helpExample{line: `ctnet ps --filter label=env=test --format '{{.Names}} {{.Label "env"}}'`, out: "db test\n"})
	run(helpExample{line: `ctnet ps --format 'table {{.Names}}\t{{.Status}}\t{{.Networks}}'`, out: "NAMES   STATUS"})
	run(helpExample{line: "ctnet ps -l -q", out: e.inspect("web").ID[:12]})
	run(helpExample{line: "ctnet logs --tail 20 -t web", out: `"GET / HTTP/1.1" 200`})
	run(helpExample{line: "ctnet logs --since 10m web 2>/dev/null"})
	run(helpExample{line: "ctnet trace web db:5432", code: 1, out: "\ndropped: "})
	run(helpExample{line: "ctnet trace host 127.0.0.1:8080", out: "delivered to web:80"})
	run(helpExample{line: "ctnet trace web 1.1.1.1 --proto icmp", out: "out of uplink0 toward 1.1.1.1"})
	run(helpExample{line: "ctnet graph", out: "network backend"})
	run(helpExample{line: "ctnet graph --format svg -o networks.svg"})
	run(helpExample{line: "ctnet graph --format dot | dot -Tpng -o networks.png"})
	for _, file := range []string{"networks.svg", "networks.png"} {
		if fi, err := os.Stat(filepath.Join(dir, file)); err != nil || fi.Size() == 0 {
			t.Errorf("graph's example wrote no %s: %v", file, err)
		}
	}
	// logs -f ends with web.
	run(helpExample{line: "ctnet logs -f web", background: true, out: `"GET / HTTP/1.1" 200`})
	setup("ctnet stop web")
	wait()
	setup("ctnet rm web")

	run(helpExample{line: "ip netns add demo && ctnet attach --netns /run/netns/demo --name demo -p 8080:80"})
	setup("ctnet rm demo && ip netns del demo")
	setup("ctnet rm -f db && ctnet container prune -f && ctnet network rm backend demo bridge") // run --network none's exited record

	shown := helpExamples(t, e)
	for _, line := range shown {
		if !slices.Contains(ran, line) {
			t.Errorf("the help example %q is not run by this test", line)
		}
	}
	for _, line := range ran {
		if !slices.Contains(shown, line) {
			t.Errorf("the test runs %q, which no --help shows", line)
		}
	}
}

// helpExamples are the lines of every command's Examples, and the command lines its
// description shows indented, from --help as printed, the tree walked through each
// help's Available Commands.
func helpExamples(t *testing.T, e *env) []string {
	var examples []string
	var walk func(path []string)
	walk = func(path []string) {
		help := e.must(append(path, "--help")...)
		text, _, _ := strings.Cut(help, "\nUsage:\n")
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, "  ctnet ") { // an example in the command's description
				examples = append(examples, strings.TrimSpace(line))
			}
		}
		if _, rest, ok := strings.Cut(help, "\nExamples:\n"); ok {
			block, _, _ := strings.Cut(rest, "\n\n")
			for _, line := range strings.Split(block, "\n") {
				examples = append(examples, strings.TrimSpace(line))
			}
		}
		if _, rest, ok := strings.Cut(help, "\nAvailable Commands:\n"); ok {
			block, _, _ := strings.Cut(rest, "\n\n")
			for _, line := range strings.Split(block, "\n") {
				if name := strings.Fields(line)[0]; name != "help" && name != "completion" {
					walk(append(slices.Clone(path), name))
				}
			}
		}
	}
	walk(nil)
	if len(examples) < 20 {
		t.Fatalf("found %d examples in the help texts: %q", len(examples), examples)
	}
	return examples
}
