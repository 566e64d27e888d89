package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/store"
)

// Each test here is a command as a Docker user types it, which ctnet answers as
// Docker does (issue 15).

// Mistakes in calling a command are reported as Docker reports them: the message,
// where to read more, and Docker's status (125 for run and exec, and for flag errors
// everywhere; 1 otherwise). The calls done right are the positive controls.
func TestDockerUsageErrors(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		args     []string
		code     int
		stderr   []string // lines the error holds, in order
		notInErr string
	}{
		{[]string{"network", "foo"}, 1, []string{"ctnet: unknown command: ctnet network foo", "See 'ctnet network --help'.", "", "Usage:  ctnet network COMMAND"}, ""},
		{[]string{"network", "lss"}, 1, []string{"ctnet: unknown command: ctnet network lss", "", "Did you mean this?", "\tls", "", "See 'ctnet network --help'."}, ""},
		{[]string{"pss"}, 1, []string{"ctnet: unknown command: ctnet pss", "", "Did you mean this?", "\tps", "", "See 'ctnet --help'."}, "; ;"},
		{[]string{"run"}, 125, []string{`ctnet: "ctnet run" requires at least 1 argument.`, "See 'ctnet run --help'.", "", "Usage:  ctnet run [flags] -- CMD [ARG...]"}, ""},
		{[]string{"run", "--bogus", "true"}, 125, []string{"ctnet: unknown flag: --bogus", "See 'ctnet run --help'."}, ""},
		{[]string{"exec", "web"}, 125, []string{`ctnet: "ctnet exec" requires at least 2 arguments.`, "See 'ctnet exec --help'."}, ""},
		{[]string{"exec", "nosuch", "true"}, 125, []string{"ctnet: "}, "See "},
		// ctnet's own failures on run are 125, the command's 126 and 127 as Docker's.
		{[]string{"run", "--rm", "--network", "nosuch", "--", "true"}, 125, []string{"ctnet: no network called nosuch"}, "See "},
		{[]string{"run", "-d", "--network", "nosuch", "--", "true"}, 125, []string{"ctnet: no network called nosuch"}, "See "},
		{[]string{"run", "--rm", "--", "/etc"}, 126, []string{"ctnet: "}, "See "},
		{[]string{"run", "--rm", "--", "/nonexistent/command"}, 127, []string{"ctnet: "}, "See "},
		{[]string{"run", "--rm", "--", "sh", "-c", "exit 125"}, 125, nil, "ctnet: "},
		{[]string{"ps", "--bogus"}, 125, []string{"ctnet: unknown flag: --bogus", "See 'ctnet ps --help'."}, ""},
		{[]string{"ps", "extra"}, 1, []string{`ctnet: "ctnet ps" accepts no arguments.`, "See 'ctnet ps --help'."}, ""},
		{[]string{"network", "create"}, 1, []string{`ctnet: "ctnet network create" requires exactly 1 argument.`, "See 'ctnet network create --help'."}, ""},
		{[]string{"rm", "nosuch"}, 1, []string{"ctnet: "}, "See "},
		{[]string{"network"}, 0, nil, ""},
		{[]string{"network", "ls"}, 0, nil, ""},
		{[]string{"ps"}, 0, nil, ""},
	}
	for _, c := range cases {
		r := e.ctnet(c.args...)
		if r.Code != c.code {
			t.Errorf("ctnet %s: exit %d, want %d (%s)", strings.Join(c.args, " "), r.Code, c.code, r)
			continue
		}
		if c.code == 0 {
			if r.Stderr != "" {
				t.Errorf("ctnet %s: stderr %q, want none", strings.Join(c.args, " "), r.Stderr)
			}
			continue
		}
		if want := strings.Join(c.stderr, "\n"); !strings.Contains(r.Stderr, want) {
			t.Errorf("ctnet %s: stderr\n%s\nwant it to hold\n%s", strings.Join(c.args, " "), r.Stderr, want)
		}
		if c.notInErr != "" && strings.Contains(r.Stderr, c.notInErr) {
			t.Errorf("ctnet %s: stderr holds %q:\n%s", strings.Join(c.args, " "), c.notInErr, r.Stderr)
		}
	}
	if r := e.ctnet("network"); !strings.Contains(r.Stdout, "Available Commands:") {
		t.Errorf("ctnet network: want its help, got %s", r)
	}
	e.must("network", "rm", "bridge") // the runs' default network
}

// `ctnet ps` words a young container's age as Docker does, singular included.
func TestDockerStatusWording(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "web", "--", "sleep", "600")
	e.runDetached("--name", "done", "--", "true")
	up := regexp.MustCompile(`Up (Less than a second|1 second|[0-9]+ seconds|About a minute)\b`)
	exited := regexp.MustCompile(`Exited \(0\) (Less than a second|1 second|[0-9]+ seconds|About a minute) ago`)
	if !eventually(func() bool { return exited.MatchString(e.must("ps", "-a")) }) {
		t.Errorf("ctnet ps -a: no \"Exited (0) ... ago\" for done:\n%s", e.must("ps", "-a"))
	}
	ps := e.must("ps")
	if !up.MatchString(ps) || strings.Contains(ps, " 1 seconds") || strings.Contains(ps, " 1 minutes") {
		t.Errorf("ctnet ps: want Docker's wording of web's age:\n%s", ps)
	}
	// Older containers, their records' times moved back: a minute and a half leaves ps
	// half a minute to say "About a minute", an hour half an hour for "About an hour".
	e.runDetached("--name", "old", "--", "sleep", "600")
	now := time.Now()
	editStore(t, e.root, func(tx *store.Tx) error {
		for name, edit := range map[string]func(c *store.Container){
			"web":  func(c *store.Container) { c.Created = now.Add(-90 * time.Second) },
			"old":  func(c *store.Container) { c.Created = now.Add(-time.Hour) },
			"done": func(c *store.Container) { c.Created, c.Finished = now.Add(-75*time.Hour), now.Add(-73*time.Hour) },
		} {
			c, err := tx.Container(name)
			if err != nil {
				return err
			}
			edit(c)
			if err := tx.PutContainer(c); err != nil {
				return err
			}
		}
		return nil
	})
	want := "web About a minute ago|Up About a minute\nold About an hour ago|Up About an hour\ndone 3 days ago|Exited (0) 3 days ago\n"
	if got := e.must("ps", "-a", "--format", "{{.Names}} {{.RunningFor}}|{{.Status}}", "--filter", "name=^(web|old|done)$"); got != want {
		t.Errorf("ctnet ps -a --format '{{.Names}} {{.RunningFor}}|{{.Status}}':\n%s\nwant\n%s", got, want)
	}
	e.must("rm", "-f", "web", "done", "old")
	e.must("network", "rm", "bridge")
}

// `ctnet version`, `--version` and `completion SHELL` work as Docker's do; the version
// is the checkout's, stamped at build time.
func TestDockerVersionAndCompletion(t *testing.T) {
	e := newEnv(t)
	describe, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		lab.Missing(t, "needs a git checkout: %v", err)
	}
	want := strings.TrimSpace(string(describe))
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"version"}, 0, "Version:     " + want + "\n"},
		{[]string{"version", "--format", "{{.Version}}"}, 0, want + "\n"},
		{[]string{"version", "--format", "{{.Client.Version}} {{.Client.Os}}/{{.Client.Arch}}"}, 0, want + " linux/" + runtime.GOARCH + "\n"},
		{[]string{"version", "-f", "{{json .}}"}, 0, `"Client":{"Version":"` + want + `","GoVersion":"go`},
		{[]string{"--version"}, 0, "ctnet " + want + " (go"},
		{[]string{"completion", "bash"}, 0, "bash completion V2 for ctnet"},
		{[]string{"completion", "zsh"}, 0, "#compdef ctnet"},
		{[]string{"completion", "fish"}, 0, "complete -c ctnet"},
		{[]string{"completion", "tcsh"}, 1, ""},
	}
	for _, c := range cases {
		r := e.ctnet(c.args...)
		if r.Code != c.code || !strings.Contains(r.Stdout, c.want) || strings.Contains(r.Stdout, "(devel)") {
			t.Errorf("ctnet %s: %s; want exit %d and stdout holding %q", strings.Join(c.args, " "), r, c.code, c.want)
		}
	}
}

// inspect takes several names, containers and networks, as Docker's does; port
// NAME PRIVATE_PORT[/PROTO] prints that port's binding.
func TestDockerInspectAndPort(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "demo", "--subnet", "172.30.9.0/24")
	e.runDetached("--name", "web", "--network", "demo", "-p", "8080:80", "-p", "8081:80/udp", "--", "sleep", "600")
	e.runDetached("--name", "client", "--network", "demo", "--", "sleep", "600")
	text := e.must("inspect", "web", "client", "demo")
	for _, want := range []string{"Container web (", "Container client (", "Network demo ("} {
		if !strings.Contains(text, want) {
			t.Errorf("ctnet inspect web client demo: no %q in\n%s", want, text)
		}
	}
	var many []container
	e.decode(e.must("inspect", "--format", "json", "web", "client"), &many)
	if len(many) != 2 || many[0].Name != "web" || many[1].Name != "client" {
		t.Errorf("ctnet inspect --format json web client: %+v, want web and client in an array", many)
	}
	var one []container
	e.decode(e.must("inspect", "--format", "json", "web"), &one)
	if len(one) != 1 || one[0].Name != "web" {
		t.Errorf("ctnet inspect --format json web: %+v, want web alone in an array, as Docker's inspect prints", one)
	}
	if r := e.ctnet("inspect", "web", "nosuch"); r.Code != 1 || !strings.Contains(r.Stdout, "Container web (") || !strings.Contains(r.Stderr, "nosuch") {
		t.Errorf("ctnet inspect web nosuch: %s; want web shown, then exit 1 naming nosuch", r)
	}
	if r := e.ctnet("inspect", "--type", "container", "demo"); r.Code != 1 {
		t.Errorf("ctnet inspect --type container demo: %s; want exit 1, demo is a network", r)
	}
	var nets []struct{ Name string }
	e.must("network", "create", "other", "--subnet", "172.30.10.0/24")
	e.decode(e.must("network", "inspect", "--format", "json", "demo", "other"), &nets)
	if len(nets) != 2 || nets[0].Name != "demo" || nets[1].Name != "other" {
		t.Errorf("ctnet network inspect --format json demo other: %+v", nets)
	}
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"port", "web"}, 0, "80/tcp -> 0.0.0.0:8080\n80/udp -> 0.0.0.0:8081\n"},
		{[]string{"port", "web", "80"}, 0, "0.0.0.0:8080\n"},
		{[]string{"port", "web", "80/tcp"}, 0, "0.0.0.0:8080\n"},
		{[]string{"port", "web", "80/udp"}, 0, "0.0.0.0:8081\n"},
		{[]string{"port", "web", "81"}, 1, ""},
		{[]string{"port", "client"}, 0, ""},
	}
	for _, c := range cases {
		if r := e.ctnet(c.args...); r.Code != c.code || r.Stdout != c.out {
			t.Errorf("ctnet %s: %s; want exit %d, stdout %q", strings.Join(c.args, " "), r, c.code, c.out)
		}
	}
	e.must("rm", "-f", "web", "client")
	e.must("network", "rm", "demo", "other")
}

// --format takes Go templates with Docker's field names on ps, inspect, network ls,
// network inspect and port; what they print is checked against the kernel.
func TestDockerFormatTemplates(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "demo", "--subnet", "172.30.9.0/24", "--label", "env=test")
	e.runDetached("--name", "web", "--network", "demo", "-p", "8080:80", "-l", "com.example.app-tier=front", "--label", "env=test", "--", "sleep", "600")
	e.runDetached("--name", "client", "--network", "demo", "--", "sleep", "600")
	webIP := e.kernelAddr("web", "eth0")
	pid := e.must("inspect", "-f", "{{.State.Pid}}", "web")
	if cmdline, err := os.ReadFile("/proc/" + strings.TrimSpace(pid) + "/cmdline"); err != nil || !strings.HasPrefix(string(cmdline), "sleep\x00600") {
		t.Errorf("ctnet inspect -f '{{.State.Pid}}' web: %q is not the pid of web's sleep (%q, %v)", pid, cmdline, err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"ps", "--format", "{{.Names}}"}, "client\nweb\n"},
		{[]string{"ps", "--format", `table {{.Names}}\t{{.Networks}}\t{{.Ports}}`}, "NAMES    NETWORKS   PORTS\nclient   demo       \nweb      demo       0.0.0.0:8080->80/tcp\n"},
		{[]string{"ps", "--format", "{{.Names}} {{.State}}", "--filter", "name=web"}, "web running\n"},
		{[]string{"ps", "--format", `table {{.Names}}\t{{.Label "com.example.app-tier"}}\t{{.Labels}}`}, "NAMES    app tier   LABELS\nclient              \nweb      front      com.example.app-tier=front,env=test\n"},
		{[]string{"inspect", "-f", "{{json .Config.Labels}}", "web", "client"}, `{"com.example.app-tier":"front","env":"test"}` + "\n{}\n"},
		{[]string{"network", "ls", "--format", `{{.Name}} {{.Label "env"}}`, "--filter", "label=env"}, "demo test\n"},
		{[]string{"network", "ls", "--format", "{{.Name}}", "--filter", "label=env=test", "--filter", "label=other"}, ""},
		{[]string{"inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"}, webIP + "\n"},
		{[]string{"inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}/{{.IPPrefixLen}}{{end}}", "web"}, webIP + "/24\n"},
		{[]string{"inspect", "-f", "{{.Name}} {{.State.Status}} {{.State.Running}}", "web", "client"}, "web running true\nclient running true\n"},
		{[]string{"inspect", "-f", `{{index .NetworkSettings.Ports "80/tcp"}}`, "web"}, "[{0.0.0.0 8080}]\n"},
		{[]string{"network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Labels}}", "--filter", "name=demo"}, "demo bridge env=test\n"},
		{[]string{"network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{len .Containers}}", "demo"}, "172.30.9.0/24 172.30.9.1 2\n"},
		{[]string{"port", "web", "--format", "{{.HostPort}}->{{.ContainerPort}}"}, "8080->80\n"},
	}
	for _, c := range cases {
		if got := e.must(c.args...); got != c.want {
			t.Errorf("ctnet %s:\n%q\nwant\n%q", strings.Join(c.args, " "), got, c.want)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(e.must("ps", "--format", "{{json .}}")), "\n") {
		var row map[string]string
		e.decode(line, &row)
		if row["Names"] == "" || row["ID"] == "" || !strings.HasPrefix(row["Status"], "Up ") || row["Networks"] != "demo" ||
			row["Names"] == "web" && row["Labels"] != "com.example.app-tier=front,env=test" {
			t.Errorf("ctnet ps --format '{{json .}}': %s lacks Docker's fields", line)
		}
	}
	var doc struct {
		Id              string
		NetworkSettings struct {
			Networks map[string]struct{ IPAddress string }
		}
	}
	e.decode(e.must("inspect", "-f", "{{json .}}", "web"), &doc)
	if doc.NetworkSettings.Networks["demo"].IPAddress != webIP || len(doc.Id) != 64 {
		t.Errorf("ctnet inspect -f '{{json .}}' web: %+v", doc)
	}
	if r := e.ctnet("ps", "--format", "{{.Nope}}"); r.Code != 1 || !strings.Contains(r.Stderr, "Nope") {
		t.Errorf("ctnet ps --format '{{.Nope}}': %s; want a refusal naming the field", r)
	}
	e.must("rm", "-f", "web", "client")
	e.must("network", "rm", "demo")
}

// ps filters and limits as Docker's does, network ls -q and --filter, and the two
// prunes remove what is unused, asking first unless -f.
func TestDockerFiltersAndPrune(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "demo", "--subnet", "172.30.9.0/24")
	e.must("network", "create", "spare", "--subnet", "172.30.10.0/24", "--bridge", "br-spare")
	e.runDetached("--name", "web", "--network", "demo", "--label", "env=prod", "-l", "tier=front", "--", "sleep", "600")
	e.runDetached("--name", "db", "-l", "env=test", "--", "sleep", "600")
	e.runDetached("--name", "failed", "--", "sh", "-c", "exit 3")
	e.runDetached("--name", "done", "--", "true")
	if !eventually(func() bool {
		return e.must("ps", "-a", "--filter", "status=exited", "-q") != "" && len(strings.Fields(e.must("ps", "-q"))) == 2
	}) {
		t.Fatalf("failed and done never exited:\n%s", e.must("ps", "-a"))
	}
	webID := e.inspect("web").ID
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"ps", "--format", "{{.Names}}"}, "db\nweb\n"},
		{[]string{"ps", "-a", "--format", "{{.Names}}"}, "done\nfailed\ndb\nweb\n"},
		{[]string{"ps", "--filter", "status=exited", "--format", "{{.Names}}"}, "done\nfailed\n"},
		{[]string{"ps", "--filter", "exited=3", "--format", "{{.Names}}"}, "failed\n"},
		{[]string{"ps", "--filter", "status=running", "--filter", "network=demo", "--format", "{{.Names}}"}, "web\n"},
		{[]string{"ps", "--filter", "name=^d", "--format", "{{.Names}}"}, "db\n"},
		{[]string{"ps", "--filter", "name=^/web$", "--format", "{{.Names}}"}, "web\n"},
		{[]string{"ps", "-a", "--filter", "name=web", "--filter", "name=db", "--format", "{{.Names}}"}, "db\nweb\n"},
		{[]string{"ps", "--filter", "label=env", "--format", "{{.Names}}"}, "db\nweb\n"},
		{[]string{"ps", "--filter", "label=env=prod", "--format", "{{.Names}}"}, "web\n"},
		{[]string{"ps", "--filter", "label=env=prod", "--filter", "label=tier=front", "--format", "{{.Names}}"}, "web\n"},
		{[]string{"ps", "--filter", "label=env=test", "--filter", "label=tier", "--format", "{{.Names}}"}, ""}, // each label must hold
		{[]string{"ps", "--filter", "label=tier", "--filter", "name=db", "--format", "{{.Names}}"}, ""},
		{[]string{"ps", "-a", "--filter", "label=none", "-q"}, ""},
		{[]string{"ps", "--filter", "id=" + webID[:6], "-q"}, webID[:12] + "\n"},
		{[]string{"ps", "--filter", "id=" + webID[:6], "-q", "--no-trunc"}, webID + "\n"},
		{[]string{"ps", "-l", "--format", "{{.Names}}"}, "done\n"},
		{[]string{"ps", "-n", "2", "--format", "{{.Names}}"}, "done\nfailed\n"},
		{[]string{"network", "ls", "--filter", "name=spa", "--format", "{{.Name}}"}, "spare\n"},
		{[]string{"network", "ls", "--filter", "type=builtin", "--format", "{{.Name}}"}, "bridge\n"},
		{[]string{"network", "ls", "--filter", "dangling=true", "--format", "{{.Name}}"}, "spare\n"}, // what network prune removes
	}
	for _, c := range cases {
		if got := e.must(c.args...); got != c.want {
			t.Errorf("ctnet %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}
	if ps := e.must("ps"); !strings.Contains(strings.SplitN(ps, "\n", 2)[0], "CREATED") {
		t.Errorf("ctnet ps: no CREATED column:\n%s", ps)
	}
	if ids := strings.Fields(e.must("network", "ls", "-q")); len(ids) != 3 || len(ids[0]) != 12 {
		t.Errorf("ctnet network ls -q: %v, want the three networks' short IDs", ids)
	}
	if got := strings.Fields(e.must("network", "ls", "--filter", "dangling=false", "--format", "{{.Name}}")); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"bridge", "demo"}) {
		t.Errorf("ctnet network ls --filter dangling=false: %q, want bridge and demo, which running containers use", got)
	}
	if ids := strings.Fields(e.must("network", "ls", "--filter", "scope=local", "-q")); len(ids) != 3 {
		t.Errorf("ctnet network ls --filter scope=local -q: %v, want the three networks", ids)
	}
	for _, bad := range []string{"dangling=maybe", "scope=galaxy"} {
		if r := e.ctnet("network", "ls", "--filter", bad); r.Code != 1 || !strings.Contains(r.Stderr, "invalid filter '"+bad+"'") {
			t.Errorf("ctnet network ls --filter %s: %s", bad, r)
		}
	}
	if r := e.ctnet("ps", "--filter", "color=red"); r.Code != 1 || !strings.Contains(r.Stderr, "invalid filter") {
		t.Errorf("ctnet ps --filter color=red: %s", r)
	}
	if r := e.ctnet("run", "-d", "-l", "novalue", "--", "true"); r.Code != 125 || !strings.Contains(r.Stderr, "use key=value") {
		t.Errorf("ctnet run -l novalue: %s; want exit 125 and how to write a label", r)
	}

	// Answering no (or nothing) keeps everything, and is no failure, as Docker's;
	// -f does not ask.
	for prune, removes := range map[string]string{"container": "stopped containers", "network": "custom networks not used by at least one container"} {
		for _, answer := range []string{"n\n", ""} {
			r := e.ctnetInput(answer, prune, "prune")
			if r.Code != 0 || r.Stdout != "WARNING! This will remove all "+removes+".\nAre you sure you want to continue? [y/N] " || r.Stderr != "" {
				t.Errorf("ctnet %s prune, answered %q: %s", prune, answer, r)
			}
		}
	}
	if got := e.must("ps", "-a", "-q"); len(strings.Fields(got)) != 4 {
		t.Fatalf("a prune answered no removed containers:\n%s", e.must("ps", "-a"))
	}
	out := e.must("container", "prune", "-f")
	if !strings.HasPrefix(out, "Deleted Containers:\n") || strings.Count(out, "\n") != 3 {
		t.Errorf("ctnet container prune -f: %q, want the two exited containers' IDs", out)
	}
	if got := e.must("ps", "-a", "--format", "{{.Names}}"); got != "db\nweb\n" {
		t.Errorf("after container prune -f, ps -a: %q, want the running db and web", got)
	}
	if _, err := e.hostRun("ip", "link", "show", "br-spare"); err != nil {
		t.Fatalf("spare's bridge is missing before the prune: %v", err)
	}
	if out := e.ctnetInput("y\n", "network", "prune"); out.Code != 0 || !strings.Contains(out.Stdout, "Deleted Networks:\nspare\n") {
		t.Errorf("ctnet network prune, answered y: %s", out)
	}
	e.host.AwaitDyingVeths(t) // the bridge prune retired
	if _, err := e.hostRun("ip", "link", "show", "br-spare"); err == nil {
		t.Errorf("network prune left spare's bridge br-spare")
	}
	if got := e.must("network", "ls", "--format", "{{.Name}}"); got != "bridge\ndemo\n" && got != "demo\nbridge\n" {
		t.Errorf("after network prune, networks: %q, want bridge and demo (in use)", got)
	}
	e.must("rm", "-f", "web", "db")
	e.must("network", "rm", "demo", "bridge")
}

// ctnetInput runs ctnet with input on its stdin.
func (e *env) ctnetInput(input string, args ...string) lab.Result {
	e.t.Helper()
	return e.ctnetInputEnv(input, nil, args...)
}

// ctnetInputEnv runs ctnet with input on its stdin and more environment variables.
func (e *env) ctnetInputEnv(input string, env []string, args ...string) lab.Result {
	e.t.Helper()
	cmd := e.host.Command(context.Background(), append([]string{lab.Binary(e.t), "--root", e.root}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := lab.Result{Stdout: stdout.String(), Stderr: stderr.String()}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run ctnet %v: %v", args, err)
	}
	return r
}

// logs --tail, --since and -t as Docker's, stdout and stderr apart; a plain log an
// older ctnet wrote still reads, as stdout.
func TestDockerLogs(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "talker", "--", "sh", "-c", "echo early; echo oops >&2; sleep 1; echo late")
	if !eventually(func() bool { return e.inspect("talker").State == "exited" }) {
		t.Fatalf("talker never exited")
	}
	stamped := e.ctnet("logs", "-t", "talker")
	line := regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z) (\w+)$`)
	stamps := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(stamped.Stdout+stamped.Stderr), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("ctnet logs -t talker: line %q is not \"TIME TEXT\" (%s)", l, stamped)
		}
		stamps[m[3]] = m[1]
	}
	// early and oops come through pipes of their own, either first.
	first := stamps["early"]
	if t1, t2 := parseStamp(t, stamps["oops"]), parseStamp(t, first); t1.Before(t2) {
		first = stamps["oops"]
	}
	cases := []struct {
		args           []string
		stdout, stderr string
	}{
		{[]string{"logs", "talker"}, "early\nlate\n", "oops\n"},
		{[]string{"logs", "--tail", "1", "talker"}, "late\n", ""},
		{[]string{"logs", "-n", "3", "talker"}, "early\nlate\n", "oops\n"},
		{[]string{"logs", "--tail", "0", "talker"}, "", ""},
		{[]string{"logs", "--tail", "all", "talker"}, "early\nlate\n", "oops\n"},
		{[]string{"logs", "--since", stamps["late"], "talker"}, "late\n", ""},
		{[]string{"logs", "--since", first, "talker"}, "early\nlate\n", "oops\n"},
		{[]string{"logs", "--since", "1h", "talker"}, "early\nlate\n", "oops\n"},
		{[]string{"logs", "--since", "2099-01-01T00:00:00Z", "talker"}, "", ""},
		{[]string{"logs", "-f", "--tail", "1", "talker"}, "late\n", ""},
	}
	for _, c := range cases {
		if r := e.ctnet(c.args...); r.Code != 0 || r.Stdout != c.stdout || r.Stderr != c.stderr {
			t.Errorf("ctnet %s: %s; want stdout %q, stderr %q", strings.Join(c.args, " "), r, c.stdout, c.stderr)
		}
	}
	if r := e.ctnet("logs", "--tail", "x", "talker"); r.Code != 1 || !strings.Contains(r.Stderr, "--tail") {
		t.Errorf("ctnet logs --tail x: %s", r)
	}
	// A container an older ctnet ran has a plain log instead of records.
	var dirs struct {
		RuntimeDir string `json:"runtime_dir"`
	}
	e.decodeInspected(e.must("inspect", "--format", "json", "talker"), &dirs)
	if err := os.Remove(dirs.RuntimeDir + "/log.json"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dirs.RuntimeDir+"/log", []byte("old one\nold two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.ctnet("logs", "--tail", "1", "talker"); r.Code != 0 || r.Stdout != "old two\n" {
		t.Errorf("ctnet logs --tail 1 of a plain log: %s", r)
	}
	e.must("rm", "talker")
	e.must("network", "rm", "bridge")
}

// run and exec take -i, -t, -e, --env-file, -w and -u as Docker's do. What the
// command got is read inside it, and its user from /proc.
func TestDockerProcessFlags(t *testing.T) {
	e := newEnv(t)
	envFile := t.TempDir() + "/env"
	if err := os.WriteFile(envFile, []byte("A=1\n# a comment\n\nB=x y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		input  string
		args   []string
		code   int
		stdout string
	}{
		{"hello\n", []string{"run", "--rm", "--", "sh", "-c", "cat; echo end"}, 0, "end\n"},
		{"hello\n", []string{"run", "--rm", "-i", "--", "cat"}, 0, "hello\n"},
		{"", []string{"run", "--rm", "--", "sh", "-c", "tty"}, 1, "not a tty\n"},
		{"", []string{"run", "--rm", "-t", "--", "sh", "-c", "test -t 0 && test -t 1 && echo tty"}, 0, "tty\r\n"},
		{"", []string{"run", "--rm", "-it", "--", "true"}, 1, ""},
		{"", []string{"run", "--rm", "-e", "FOO=bar", "-e", "FROMHOST", "-e", "UNSET_HERE", "--", "env"}, 0,
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nHOME=/root\nFOO=bar\nFROMHOST=yes\n"},
		{"", []string{"run", "--rm", "--env-file", envFile, "-e", "A=2", "--", "sh", "-c", "echo $A $B"}, 0, "2 x y\n"},
		{"", []string{"run", "--rm", "--hostname", "box", "-e", "X=1", "--", "sh", "-c", "echo $HOSTNAME"}, 0, "box\n"},
		{"", []string{"run", "--rm", "--", "sh", "-c", "echo $FROMHOST"}, 0, "yes\n"},
		{"", []string{"run", "--rm", "-w", "/tmp", "--", "pwd"}, 0, "/tmp\n"},
		{"", []string{"run", "--rm", "-w", "tmp", "--", "pwd"}, 125, ""},
		{"", []string{"run", "--rm", "-u", "65534:65534", "--", "sh", "-c", "id -u; id -g"}, 0, "65534\n65534\n"},
		{"", []string{"run", "--rm", "--user", "nobody", "-e", "X=1", "--", "sh", "-c", "id -u; echo $HOME"}, 0, "65534\n/nonexistent\n"},
		{"", []string{"run", "--rm", "-u", "no-such-user", "--", "true"}, 125, ""},
	}
	run := func(input string, args ...string) lab.Result {
		return e.ctnetInputEnv(input, []string{"FROMHOST=yes"}, args...)
	}
	for _, c := range cases {
		if r := run(c.input, c.args...); r.Code != c.code || r.Stdout != c.stdout {
			t.Errorf("ctnet %s: %s; want exit %d, stdout %q", strings.Join(c.args, " "), r, c.code, c.stdout)
		}
	}
	if r := run("", "run", "--rm", "-it", "--", "true"); !strings.Contains(r.Stderr, "the input device is not a TTY") {
		t.Errorf("ctnet run -it without a terminal: %s", r)
	}

	// With a terminal, -it gives the command one and passes what is typed.
	script := e.host.Command(context.Background(), "script", "-qec",
		lab.Binary(t)+" --root "+e.root+" run --rm -it -- sh", "/dev/null")
	script.Stdin = strings.NewReader("tty; echo hi-$((6*7)); exit 3\n")
	out, err := script.CombinedOutput()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 3 || !strings.Contains(string(out), "hi-42") || !strings.Contains(string(out), "/dev/pts/") {
		t.Errorf("ctnet run -it -- sh under a terminal: %v, output %q; want hi-42, a pts and exit 3", err, out)
	}

	// -d -i keeps a shell waiting on stdin, which without -i ends at once; -e,
	// -w and -u hold for a detached command too.
	e.runDetached("-i", "--name", "keeper", "--", "sh")
	e.runDetached("--name", "quitter", "--", "sh")
	e.runDetached("-e", "Z=9", "-w", "/tmp", "-u", "65534", "--name", "dz", "--", "sh", "-c", "echo $Z; pwd; id -u; exec sleep 600")
	if !eventually(func() bool { return e.inspect("quitter").State == "exited" }) {
		t.Errorf("sh -d without -i did not end")
	}
	if c := e.inspect("keeper"); c.State != "running" {
		t.Errorf("sh -d -i is %s, want running", c.State)
	}
	var logs string
	if !eventually(func() bool { logs = e.must("logs", "dz"); return logs == "9\n/tmp\n65534\n" }) {
		t.Errorf("ctnet logs dz: %q, want 9, /tmp and 65534", logs)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(e.inspect("dz").Process.PID) + "/status")
	if err != nil || !regexp.MustCompile(`(?m)^Uid:\s+65534\s`).Match(status) {
		t.Errorf("dz's process does not run as uid 65534: %v\n%s", err, status)
	}
	execCases := []struct {
		input  string
		args   []string
		stdout string
	}{
		{"", []string{"exec", "-e", "Y=2", "keeper", "--", "sh", "-c", "echo $Y $FROMHOST"}, "2\n"},
		{"", []string{"exec", "keeper", "--", "sh", "-c", "echo $FROMHOST"}, "yes\n"},
		{"", []string{"exec", "-u", "65534", "-w", "/tmp", "keeper", "--", "sh", "-c", "id -u; pwd"}, "65534\n/tmp\n"},
		{"in\n", []string{"exec", "-i", "keeper", "--", "cat"}, "in\n"},
		{"in\n", []string{"exec", "keeper", "--", "sh", "-c", "cat; echo none"}, "none\n"},
		{"", []string{"exec", "-t", "keeper", "--", "sh", "-c", "test -t 1 && echo tty"}, "tty\r\n"},
	}
	for _, c := range execCases {
		if r := run(c.input, c.args...); r.Code != 0 || r.Stdout != c.stdout {
			t.Errorf("ctnet %s: %s; want stdout %q", strings.Join(c.args, " "), r, c.stdout)
		}
	}
	e.must("rm", "-f", "keeper", "quitter", "dz")
	e.must("network", "rm", "bridge")
}

// ctnet doctor, run by an unprivileged user or with --rootless, says what to change
// for /dev/net/tun and net.ipv4.ping_group_range, and is content once they are set
// (inside the sandbox only: its own tun node and network namespace).
func TestDockerDoctorRootless(t *testing.T) {
	u := newUserEnv(t) // /dev/net/tun 0666, ping_group_range "0 2147483647"
	if r := u.ctnet("doctor"); r.Code != 0 || !strings.Contains(r.Stdout, "ok: /dev/net/tun: you can open it") ||
		!strings.Contains(r.Stdout, `ok: net.ipv4.ping_group_range is "0 2147483647": your groups may ping`) {
		t.Errorf("ctnet doctor as a user, on a host set up for it: %s", r)
	}
	u.host.Sysctl(t, "net.ipv4.ping_group_range", "1 0")
	u.host.DenyTUN(t)
	r := u.ctnet("doctor")
	for _, want := range []string{
		"problem: /dev/net/tun: permission denied",
		"chmod 0666 /dev/net/tun", "/etc/udev/rules.d/60-ctnet-tun.rules",
		`problem: net.ipv4.ping_group_range is "1 0": none of your groups`,
		`sysctl -w net.ipv4.ping_group_range="0 2147483647"`, "/etc/sysctl.d/60-ctnet-ping.conf",
	} {
		if r.Code != 1 || !strings.Contains(r.Stdout, want) {
			t.Errorf("ctnet doctor as a user, without tun and ping: %s; want exit 1 and %q", r, want)
		}
	}
	// Root asks for unprivileged users in general.
	root := lab.Root(t)
	if r := u.host.Ctnet(t, root, "doctor", "--rootless"); r.Code != 1 || !strings.Contains(r.Stdout, `problem: net.ipv4.ping_group_range is "1 0": no group may ping`) ||
		!strings.Contains(r.Stdout, "/dev/net/tun is ") {
		t.Errorf("ctnet doctor --rootless as root, ping_group_range \"1 0\": %s", r)
	}
	u.host.Sysctl(t, "net.ipv4.ping_group_range", "0 2147483647")
	if r := u.host.Ctnet(t, root, "doctor", "--rootless"); !strings.Contains(r.Stdout, `ok: net.ipv4.ping_group_range is "0 2147483647"`) {
		t.Errorf("ctnet doctor --rootless as root, ping_group_range \"0 2147483647\": %s", r)
	}
}

// --debug logs each kernel change and store transaction, with the time it took, on
// stderr; without it, nothing.
func TestDockerDebugLog(t *testing.T) {
	e := newEnv(t)
	r := e.ctnet("--debug", "network", "create", "demo", "--subnet", "172.30.9.0/24", "--bridge", "br-demo")
	if r.Code != 0 {
		t.Fatalf("ctnet --debug network create: %s", r)
	}
	for _, want := range []string{
		`level=DEBUG msg="store transaction began"`,
		`level=DEBUG msg="kernel change" step="create bridge br-demo" elapsed=`,
		`level=DEBUG msg="kernel change" step="update firewall" elapsed=`,
		`level=DEBUG msg="store transaction committed" elapsed=`,
	} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("ctnet --debug network create: stderr lacks %q:\n%s", want, r.Stderr)
		}
	}
	if r := e.ctnet("--debug", "network", "create", "demo"); !strings.Contains(r.Stderr, `level=DEBUG msg="store transaction rolled back`) {
		t.Errorf("ctnet --debug network create of an existing name: no rollback logged: %s", r)
	}
	if r := e.ctnet("network", "create", "quiet", "--subnet", "172.30.10.0/24"); r.Code != 0 || r.Stderr != "" {
		t.Errorf("ctnet network create without --debug: %s; want nothing on stderr", r)
	}
	// run -d's supervisor makes the container: its log comes to run's stderr.
	r = e.ctnet("--debug", "run", "-d", "--name", "web", "--network", "demo", "--", "sleep", "600")
	for _, want := range []string{
		`level=DEBUG msg="store transaction began"`,
		`level=DEBUG msg="kernel change" step="create veth vc` + r.Stdout[:8],
		`level=DEBUG msg="store transaction committed" elapsed=`,
	} {
		if r.Code != 0 || !strings.Contains(r.Stderr, want) {
			t.Errorf("ctnet --debug run -d: %s; want stderr holding %q", r, want)
		}
	}
	if r := e.ctnet("--debug", "run", "-d", "--network", "nosuch", "--", "true"); r.Code != 125 ||
		!strings.Contains(r.Stderr, `level=DEBUG msg="store transaction rolled back`) || !strings.HasSuffix(r.Stderr, "ctnet: no network called nosuch\n") {
		t.Errorf("ctnet --debug run -d --network nosuch: %s; want the rollback logged, then the error, exit 125", r)
	}
	if r := e.ctnet("run", "-d", "--name", "quiet", "--network", "demo", "--", "sleep", "600"); r.Code != 0 || r.Stderr != "" {
		t.Errorf("ctnet run -d without --debug: %s; want nothing on stderr", r)
	}
	e.must("rm", "-f", "web", "quiet")
	e.must("network", "rm", "demo", "quiet")
}

func parseStamp(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("log time %q: %v", s, err)
	}
	return ts
}

// Templates on a dual-stack and an IPv6-only network give Docker's IPv6 fields, and
// no IPv4 address where there is none (Docker's "", not Go's "invalid IP"); the
// addresses are the kernel's.
func TestDockerFormatIPv6(t *testing.T) {
	e := newEnv(t)
	e.must("network", "create", "dual", "--ipv6", "--subnet", "172.30.11.0/24", "--subnet", "fd63:746e:7400:11::/64")
	e.must("network", "create", "six", "--ipv6", "--ipv4=false", "--subnet", "fd63:746e:7400:12::/64")
	e.runDetached("--name", "d", "--network", "dual", "--", "sleep", "600")
	e.runDetached("--name", "s", "--network", "six", "--", "sleep", "600")
	kernel6 := func(name string) string {
		out, err := e.inContainer(name, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
		fields := strings.Fields(out)
		if err != nil || len(fields) < 4 {
			t.Fatalf("%s's IPv6 address: %v: %s", name, err, out)
		}
		return fields[3] // ADDRESS/64
	}
	d4, d6, s6 := e.kernelAddr("d", "eth0"), kernel6("d"), kernel6("s")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"inspect", "-f", "{{.NetworkSettings.IPAddress}}|{{.NetworkSettings.GlobalIPv6Address}}/{{.NetworkSettings.GlobalIPv6PrefixLen}}", "d", "s"},
			d4 + "|" + d6 + "\n|" + s6 + "\n"},
		{[]string{"inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}|{{.IPv6Gateway}}{{end}}", "d", "s"},
			d4 + "|fd63:746e:7400:11::1\n|fd63:746e:7400:12::1\n"},
		{[]string{"network", "inspect", "-f", "{{.EnableIPv6}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}} {{end}}", "dual", "six"},
			"true 172.30.11.0/24 172.30.11.1 fd63:746e:7400:11::/64 fd63:746e:7400:11::1 \ntrue fd63:746e:7400:12::/64 fd63:746e:7400:12::1 \n"},
		{[]string{"network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{.IPv4Address}}|{{.IPv6Address}}{{end}}", "dual", "six"},
			"d " + d4 + "/24|" + d6 + "\ns |" + s6 + "\n"},
		{[]string{"network", "ls", "--filter", "name=^(dual|six)$", "--format", "{{.Name}} {{.IPv6}} {{.Subnet}}"},
			"dual true 172.30.11.0/24,fd63:746e:7400:11::/64\nsix true fd63:746e:7400:12::/64\n"},
		{[]string{"network", "ls", "--filter", "name=^bridge$", "--format", "{{.Name}} {{.IPv6}}"}, "bridge false\n"},
	}
	e.runDetached("--name", "b", "--", "sleep", "600") // the default network, IPv4 only
	for _, c := range cases {
		if r := e.ctnet(c.args...); r.Code != 0 || r.Stdout != c.want {
			t.Errorf("ctnet %s: %s\nwant stdout\n%q", strings.Join(c.args, " "), r, c.want)
		}
	}
	e.must("rm", "-f", "d", "s", "b")
	e.must("network", "rm", "dual", "six", "bridge")
}

// An unprivileged user's run -d logs its making with --debug too, and still ends
// once the container runs: nothing the supervisor starts (the user-mode network,
// the rootless sandbox) holds the log's pipe.
func TestDockerDebugLogRootless(t *testing.T) {
	u := newUserEnv(t)
	r := u.ctnet("--debug", "run", "-d", "--name", "web", "--", "sleep", "600")
	if r.Code != 0 || !strings.Contains(r.Stderr, `level=DEBUG msg="store transaction committed" elapsed=`) {
		t.Errorf("ctnet --debug run -d as a user: %s; want the store's commit logged", r)
	}
	if r := u.ctnet("run", "-d", "--name", "quiet", "--", "sleep", "600"); r.Code != 0 || r.Stderr != "" {
		t.Errorf("ctnet run -d as a user without --debug: %s; want nothing on stderr", r)
	}
	u.must("rm", "-f", "web", "quiet")
}
