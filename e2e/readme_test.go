package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// The README's walkthrough runs as written, command by command, in a sandbox host
// whose resolver and "internet" are the wan's: a DNS server there answers
// example.org with the wan's address, where an HTTP server answers. The one
// placeholder, <the host's address>, is the sandbox host's uplink address, asked
// from the wan.
func TestREADMEWalkthrough(t *testing.T) {
	e := newEnv(t)
	commands := readmeWalkthrough(t)
	resolver := e.wan.ListenUDP(t, lab.WANIP+":53")
	go serveDNS(resolver, "example.org.", lab.WANIP)
	web := e.wan.ListenTCP(t, lab.WANIP+":80")
	const page = "the example.org page, from the wan\n"
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, page) }))
	// The host's resolv.conf names the wan's resolver, in a mount namespace of the
	// sandbox's own (a Boot), where every command below runs.
	e.host.Boot = lab.NewBoot(t)
	resolvConf := t.TempDir() + "/resolv.conf"
	if err := os.WriteFile(resolvConf, []byte("nameserver "+lab.WANIP+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.host.MustRun(t, "mount", "--bind", resolvConf, "/etc/resolv.conf")
	// The leak check compares with the host as seen from there (ip names the wan's
	// namespace differently without /run/netns).
	e.before = e.host.Snapshot(t, e.root)

	shell := fmt.Sprintf(`ctnet() { %s --root %s "$@"; }; `, lab.Binary(t), e.root)
	shown := readmeShown(t) // the header of a table it shows is checked
	for _, cmd := range commands {
		var out string
		var err error
		if strings.Contains(cmd, "<the host's address>") {
			cmd = strings.ReplaceAll(cmd, "<the host's address>", lab.HostUplinkIP)
			// The server needs a moment to listen.
			eventually(func() bool { out, err = e.wanRun("sh", "-c", cmd); return err == nil })
		} else {
			out, err = e.host.Try("sh", "-c", shell+cmd)
		}
		if err != nil {
			t.Fatalf("README: %s: %v\n%s", cmd, err, out)
		}
		t.Logf("README: %s\n%s", cmd, out)
		if shown, ok := shown[cmd]; ok && !slices.Equal(strings.Fields(strings.SplitN(out, "\n", 2)[0]), strings.Fields(shown[0])) {
			t.Errorf("README: %s: first line %q, the README shows %q", cmd, strings.SplitN(out, "\n", 2)[0], shown[0])
		}
		for want, on := range map[string]string{
			"ctnet ps":                      `(?m)^[0-9a-f]{12}\s+client\s.*Up .*172\.18\.0\.3`,
			"ping -c1 172.18.0.2":           `1 received`,
			"curl -s http://example.org/":   regexp.QuoteMeta(page),
			"curl http://203.0.113.1:8080/": `Directory listing`,
			"ctnet inspect web":             `Container web \(`,
		} {
			if strings.Contains(cmd, want) && !regexp.MustCompile(on).MatchString(out) {
				t.Errorf("README: %s: output does not match %q:\n%s", cmd, on, out)
			}
		}
	}
	if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) > 0 || len(e.networks()) > 0 {
		t.Errorf("the walkthrough's last command left containers %v or networks %v", ids, e.networks())
	}
}

// readmeWalkthrough is the commands of the README walkthrough's console block,
// without their prompts and comments.
func readmeWalkthrough(t *testing.T) []string {
	t.Helper()
	var commands []string
	for _, line := range strings.Split(walkthroughBlock(t, "```console\n"), "\n") {
		if cmd, ok := strings.CutPrefix(line, "# "); ok {
			commands = append(commands, strings.TrimSpace(trailingComment.ReplaceAllString(cmd, "")))
		}
	}
	if len(commands) < 8 {
		t.Fatalf("the README's walkthrough has %d commands: %q", len(commands), commands)
	}
	return commands
}

// readmeShown is the output the walkthrough's console block shows under each of its
// commands that has some.
func readmeShown(t *testing.T) map[string][]string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## Walkthrough")
	_, block, _ := strings.Cut(section, "```console\n")
	block, _, _ = strings.Cut(block, "```")
	comment := regexp.MustCompile(`\s{2,}#.*$`)
	shown := map[string][]string{}
	var cmd string
	for _, line := range strings.Split(block, "\n") {
		if c, ok := strings.CutPrefix(line, "# "); ok {
			cmd = strings.TrimSpace(comment.ReplaceAllString(c, ""))
		} else if line != "" {
			shown[cmd] = append(shown[cmd], line)
		}
	}
	if len(shown["ctnet ps"]) == 0 {
		t.Fatalf("the README's walkthrough shows no output of ctnet ps")
	}
	return shown
}

// The README's "Why can't my container reach X?" runs as written, in a sandbox host
// whose uplink is 203.0.113.1 and 2001:db8:ff::1: each command's output is the lines
// the README shows for it, but for the trace's hop lines, whose interface names and
// ports differ from run to run (their namespace, hook and verdict must match).
func TestREADMETrace(t *testing.T) {
	e := newEnv(t)
	block := readmeBlock(t, "## Why can't my container reach X?", "```console\n")
	shell := fmt.Sprintf(`ctnet() { %s --root %s "$@"; }; `, lab.Binary(t), e.root)
	var cmd string
	var want []string
	check := func() {
		if cmd == "" {
			return
		}
		out, err := e.host.Try("sh", "-c", shell+cmd)
		if len(want) == 0 {
			// The README shows no output: IDs and names the command echoes.
			if err != nil {
				t.Fatalf("README: %s: %v\n%s", cmd, err, out)
			}
			return
		}
		if err != nil {
			t.Fatalf("README: %s: %v\n%s", cmd, err, out)
		}
		t.Logf("README: %s\n%s", cmd, out)
		got := strings.Split(strings.TrimRight(out, "\n"), "\n")
		if len(got) != len(want) {
			t.Errorf("README: %s: %d lines, the README shows %d:\n%s", cmd, len(got), len(want), out)
			return
		}
		hop := regexp.MustCompile(`^\S+\s+(prerouting|input|forward|output|postrouting)\s`)
		for i := range want {
			if hop.MatchString(want[i]) {
				w, g := strings.Fields(want[i]), strings.Fields(got[i])
				if w[0] != g[0] || w[1] != g[1] || w[len(w)-1] != g[len(g)-1] {
					t.Errorf("README: %s: line %d is %q, the README shows %q", cmd, i+1, got[i], want[i])
				}
			} else if !strings.HasPrefix(want[i], "NAMESPACE") && got[i] != want[i] {
				t.Errorf("README: %s: line %d is %q, the README shows %q", cmd, i+1, got[i], want[i])
			}
		}
	}
	for _, line := range strings.Split(block, "\n") {
		if c, ok := strings.CutPrefix(line, "# "); ok {
			check()
			cmd, want = c, nil
			if i := strings.Index(cmd, "  #"); i >= 0 {
				cmd = strings.TrimSpace(cmd[:i])
			}
		} else if line != "" {
			want = append(want, line)
		}
	}
	check()
	if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) > 0 || len(e.networks()) > 0 {
		t.Errorf("the section's last command left containers %v or networks %v", ids, e.networks())
	}
}

// The README's "See what ctnet does" runs as written, in a sandbox host: each
// command's output is the lines the README shows for it, but for the IDs ctnet draws
// (and the names made of them) and the root, which is the default one there.
func TestREADMEDryRun(t *testing.T) {
	e := newEnv(t)
	block := readmeBlock(t, "## See what ctnet does", "```console\n")
	shell := fmt.Sprintf(`ctnet() { %s --root %s "$@"; }; `, lab.Binary(t), e.root)
	ids := regexp.MustCompile(`[0-9a-f]{8,64}`)
	normal := func(s string) string { return ids.ReplaceAllString(strings.TrimRight(s, "\n"), "ID") }
	var cmd, want string
	ran := 0
	check := func() {
		if cmd == "" {
			return
		}
		ran++
		out, err := e.host.Try("sh", "-c", shell+cmd)
		if err != nil {
			t.Fatalf("README: %s: %v\n%s", cmd, err, out)
		}
		if want == "" {
			return // the README shows no output: the ID the command echoes
		}
		t.Logf("README: %s\n%s", cmd, out)
		got := normal(strings.ReplaceAll(out, e.root, "/run/ctnet"))
		if w := normal(want); got != w {
			t.Errorf("README: %s prints other lines than the README shows:\n%s", cmd, lineDiff(w, got))
		}
	}
	for _, line := range strings.Split(block, "\n") {
		if c, ok := strings.CutPrefix(line, "# ctnet "); ok {
			check()
			cmd, want = "ctnet "+c, ""
			if i := strings.Index(cmd, "  #"); i >= 0 {
				cmd = strings.TrimSpace(cmd[:i])
			}
		} else if line != "" {
			want += line + "\n"
		}
	}
	check()
	if ran != 4 {
		t.Errorf("the section has %d commands, want 4", ran)
	}
	if ids := strings.Fields(e.must("ps", "-a", "-q")); len(ids) > 0 || len(e.networks()) > 0 {
		t.Errorf("the section's last command left containers %v or networks %v", ids, e.networks())
	}
}

// The walkthrough's "More:" block runs as written too, line by line, in a lab holding
// what its lines name: the walkthrough's demo, web and client (made by its first
// commands, as the README has them), and a network backend, a container db on it,
// a namespace /run/netns/other and a host interface eth0. Its one placeholder, CMD,
// is sleep infinity. logs -f runs until web is removed, and the shell with a
// terminal under script.
func TestREADMEMore(t *testing.T) {
	e := newEnv(t)
	e.host.Boot = lab.NewBoot(t) // ip netns add makes its pin in the boot's /run/netns
	e.before = e.host.Snapshot(t, e.root)
	environ := append(e.ctnetOnPath(), "TERM=xterm")
	shell := func(line string) *exec.Cmd {
		cmd := e.host.Command(context.Background(), "sh", "-c", line)
		cmd.Env = environ
		return cmd
	}
	setup := func(line string) {
		t.Helper()
		if out, err := shell(line).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
	}
	for _, cmd := range readmeWalkthrough(t)[:3] {
		setup(cmd)
	}
	e.host.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
	defer e.host.MustRun(t, "ip", "link", "del", "eth0")
	e.host.MustRun(t, "ip", "link", "set", "eth0", "up")
	setup("ip netns add other && ctnet network create backend && ctnet run -d --name db --network backend -- sleep infinity")
	if !eventually(func() bool { _, err := e.hostRun("curl", "-sf", "http://127.0.0.1:8080/"); return err == nil }) {
		t.Fatalf("web never answered on 127.0.0.1:8080")
	}

	want := map[string]string{ // what a line's output holds
		"ctnet port web; ctnet port web 8000; ctnet network inspect demo; ctnet ps -a --format json": "8000/tcp -> 0.0.0.0:8080\n0.0.0.0:8080\nNetwork demo (",
		`ctnet inspect -f '{{.NetworkSettings.IPAddress}}' web client`:                               "172.18.0.2\n172.18.0.3\n",
		"ctnet container prune -f; ctnet network prune -f":                                           "Deleted Networks:\napart\nlan\n",
		"ctnet run -it --rm --network demo -e TERM -w /tmp -- sh":                                    "term=xterm\r\n/tmp\r\n",
		"ctnet trace web db --port 5432":                                                             "\ndelivered to db:5432",
		"ctnet graph":                                                                                "network backend",
	}
	var follow *exec.Cmd
	var followed bytes.Buffer
	ran := 0
	for _, line := range readmeMore(t) {
		ran++
		line = strings.ReplaceAll(line, "-- CMD", "-- sleep infinity")
		cmd := shell(line)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		switch {
		case strings.HasPrefix(line, "ctnet logs -f "):
			follow, cmd.Stdout, cmd.Stderr = cmd, &followed, &followed
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			continue
		case strings.HasPrefix(line, "ctnet run -it "):
			cmd = e.host.Command(context.Background(), "script", "-qec", line, "/dev/null")
			cmd.Env, cmd.Stdout, cmd.Stderr = environ, &out, &out
			cmd.Stdin = strings.NewReader("echo term=$TERM; pwd; exit\n")
		}
		if err := cmd.Run(); err != nil || !strings.Contains(out.String(), want[line]) {
			t.Errorf("README: %s: %v, output\n%s\nwant it to hold %q", line, err, out.String(), want[line])
		}
		t.Logf("README: %s\n%s", line, out.String())
	}
	if ran != 16 {
		t.Errorf("ran %d lines of the README's \"More:\", want its 16", ran)
	}
	setup("ctnet rm -f web client db dl ext && ip netns del other && ctnet network rm demo backend bridge")
	if follow == nil {
		t.Fatalf("the README's \"More:\" has no logs -f")
	}
	if err := follow.Wait(); err != nil || !strings.Contains(followed.String(), `"GET / HTTP/1.1" 200`) {
		t.Errorf("README: ctnet logs -f web, until web was removed: %v, output\n%s", err, followed.String())
	}
}

// readmeMore is the command lines of the walkthrough's "More:" block, without their
// comments.
func readmeMore(t *testing.T) []string {
	t.Helper()
	var lines []string
	for _, line := range strings.Split(walkthroughBlock(t, "More:\n\n```sh\n"), "\n") {
		if line = strings.TrimSpace(trailingComment.ReplaceAllString(line, "")); line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	return lines
}

// trailingComment is a shell comment after a command line's text.
var trailingComment = regexp.MustCompile(`\s{2,}#.*$`)

// walkthroughBlock is the text of the README walkthrough's first code block that
// begins with opening, up to its closing fence.
func walkthroughBlock(t *testing.T, opening string) string {
	t.Helper()
	return readmeBlock(t, "## Walkthrough", opening)
}

// readmeBlock is the text of the first code block in the README's section headed
// heading that begins with opening, up to its closing fence.
func readmeBlock(t *testing.T, heading, opening string) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n"+heading)
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, opening)
	if !ok {
		t.Fatalf("the README's section %q has no block beginning %q", heading, opening)
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// The README's IPv6 block runs as written, its placeholder CMD a server that answers
// with the client's address, on a host that has the block's 2001:db8::5: the
// networks have the families and subnets its comments promise, web has the address it
// asks for and answers the wan over IPv6 with the wan's own address, and the port
// published on 2001:db8::5 answers there.
func TestREADMEIPv6(t *testing.T) {
	e := newEnv(t)
	e.host.AddLoopbackAddr(t, "2001:db8::5/128")
	e.before = e.host.Snapshot(t, e.root) // the address is the test's, not ctnet's
	environ := e.ctnetOnPath()
	var lines []string
	for _, line := range strings.Split(readmeBlock(t, "## IPv6", "```sh\n"), "\n") {
		if line = strings.TrimSpace(trailingComment.ReplaceAllString(line, "")); line != "" {
			lines = append(lines, line)
		}
	}
	if len(lines) != 5 {
		t.Fatalf("the README's IPv6 block has %d lines, want its 5: %q", len(lines), lines)
	}
	for _, line := range lines {
		port := "80"
		if strings.Contains(line, ":443") {
			port = "443"
		}
		line = strings.ReplaceAll(line, "-- CMD", "-- "+strings.Join(peerServer6Quoted(port), " "))
		cmd := e.host.Command(context.Background(), "sh", "-c", line)
		cmd.Env = environ
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("README: %s: %v\n%s", line, err, out)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "inspect", "-f", "{{.EnableIPv6}} {{range .IPAM.Config}}{{.Subnet}} {{end}}", "dual"}, `^true \d+\.\d+\.\d+\.\d+/\d+ fd63:746e:7400:\S+/64$`},
		{[]string{"network", "inspect", "-f", "{{.EnableIPv6}} {{.Masquerade}} {{range .IPAM.Config}}{{.Subnet}} {{end}}", "pub"}, `^true false 172\.30\.0\.0/24 2001:db8:30::/64$`},
		{[]string{"network", "inspect", "-f", "{{.EnableIPv6}} {{range .IPAM.Config}}{{.Subnet}} {{end}}", "six"}, `^true fd63:746e:7400:\S+/64$`},
		{[]string{"inspect", "-f", "{{.NetworkSettings.GlobalIPv6Address}}", "web"}, `^fd63:746e:7400::80$`},
	} {
		if out := strings.TrimSpace(e.must(c.args...)); !regexp.MustCompile(c.want).MatchString(out) {
			t.Errorf("after the README's IPv6 block, ctnet %s: %q, want %s", strings.Join(c.args, " "), out, c.want)
		}
	}
	if !eventually(func() bool { return askPeer6(e.wanRun, lab.HostUplinkIP6, 8080) == lab.WANIP6 }) {
		t.Errorf("the wan reaching web at [%s]:8080: want the server to see the wan's %s, got %q", lab.HostUplinkIP6, lab.WANIP6, askPeer6(e.wanRun, lab.HostUplinkIP6, 8080))
	}
	if !eventually(func() bool { return askPeer6(e.hostRun, "2001:db8::5", 8443) != "" }) {
		t.Errorf("the port published on [2001:db8::5]:8443 does not answer there")
	}
	for _, id := range strings.Fields(e.must("ps", "-q")) {
		e.must("rm", "-f", id)
	}
	e.must("network", "rm", "dual", "pub", "six")
}

// peerServer6Quoted is peerServer6 as words of a shell command line.
func peerServer6Quoted(port string) []string {
	return []string{"socat", "TCP6-LISTEN:" + port + ",fork,reuseaddr,ipv6only=0", "'SYSTEM:echo $SOCAT_PEERADDR'"}
}

// ctnetOnPath is the environment of a shell in which ctnet is this test's binary with
// its root, as the README's command lines call it.
func (e *env) ctnetOnPath() []string {
	e.t.Helper()
	bin := e.t.TempDir()
	if err := os.WriteFile(bin+"/ctnet", []byte("#!/bin/sh\nexec "+lab.Binary(e.t)+" --root "+e.root+" \"$@\"\n"), 0o755); err != nil {
		e.t.Fatal(err)
	}
	return append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
}
