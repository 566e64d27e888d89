package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
)

// runtimeMain is a runtime outside the module that uses ctnet's public API only: it
// attaches the namespace it is given, waits for a line on stdin (the test looks at
// the namespace meanwhile), runs a command in a container of its own that reaches
// the attached one, and removes both and the network.
const runtimeMain = `package main

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"os"

	"github.com/ctnet/ctnet/network"
)

func main() {
	root, netnsPath := os.Args[1], os.Args[2]
	ctx := context.Background()
	m, err := network.New(network.Options{Root: root})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	n, err := m.EnsureNetwork(ctx, network.NetworkSpec{Name: "lib", Subnet: "10.123.0.0/24"})
	if err != nil {
		log.Fatal(err)
	}
	attached, err := m.Create(ctx, network.ContainerSpec{Name: "attached", Network: network.OnNetwork(n.Name), NetNS: netnsPath})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("attached", attached.Attachments[0].IP)
	bufio.NewReader(os.Stdin).ReadString('\n')
	p, err := m.Run(ctx, network.ContainerSpec{Name: "job", Network: network.OnNetwork(n.Name),
		Command: []string{"sh", "-c", "ip -o -4 addr show eth0 && ping -c1 -W5 " + attached.Attachments[0].IP.String()}},
		network.RunOptions{Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("job", p.Container.Attachments[0].IP)
	code, err := p.Wait()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit", code)
	for _, c := range []string{p.Container.Name, attached.Name} {
		if err := m.Remove(ctx, c, false); err != nil {
			log.Fatal(err)
		}
	}
	if err := m.RemoveNetwork(ctx, n.Name, false); err != nil {
		log.Fatal(err)
	}
}
`

// A Go program in a module of its own, which requires ctnet through a replace
// directive, attaches a namespace, runs a process in a container and removes both
// through the public API; the test checks what it did with iproute2, and that it
// left nothing behind.
func TestLibraryFromAnotherModule(t *testing.T) {
	e := newEnv(t)
	if _, err := exec.LookPath("go"); err != nil {
		lab.Missing(t, "needs the go command")
	}
	bin := buildRuntime(t)

	name := lab.RandomName("lib-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.host.Command(ctx, bin, e.root, "/run/netns/"+name)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	first, _ := out.ReadString('\n')
	attachedIP, ok := strings.CutPrefix(strings.TrimSpace(first), "attached ")
	if !ok {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("the runtime did not attach the namespace: %q, stderr %q", first, stderr.String())
	}
	// While attached: the namespace has eth0 with the address the API reported.
	addr, err := exec.Command("ip", "-n", name, "-o", "-4", "addr", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(addr), " "+attachedIP+"/24 ") {
		t.Errorf("the attached namespace's eth0 lacks %s/24: %v: %s", attachedIP, err, addr)
	}
	stdin.Close()
	restBytes, _ := io.ReadAll(out)
	rest := string(restBytes)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the runtime failed: %v\nstdout: %s%s\nstderr: %s", err, first, rest, stderr.String())
	}

	// The job's own eth0 (its ip output) has the address the API reported, another
	// one of the network's than the attached namespace's, and its ping reached it.
	jobIP := regexp.MustCompile(`(?m)^job (\S+)$`).FindStringSubmatch(rest)
	if jobIP == nil {
		t.Fatalf("the runtime did not report the job's address:\n%s", rest)
	}
	if jobIP[1] == attachedIP || !strings.HasPrefix(jobIP[1], "10.123.0.") {
		t.Errorf("job address %s, attached %s: want two addresses of 10.123.0.0/24", jobIP[1], attachedIP)
	}
	if !regexp.MustCompile(`(?m)^\d+: eth0\s+inet ` + regexp.QuoteMeta(jobIP[1]) + `/24 `).MatchString(rest) {
		t.Errorf("the job's eth0 does not show %s/24:\n%s", jobIP[1], rest)
	}
	if !strings.Contains(rest, "1 packets transmitted, 1 received") || !strings.Contains(rest, "\nexit 0\n") {
		t.Errorf("the job's ping to the attached namespace failed:\n%s", rest)
	}

	// Removed: the namespace is the test's again, with only loopback.
	links, err := exec.Command("ip", "-n", name, "-o", "link").CombinedOutput()
	if n := len(strings.Split(strings.TrimSpace(string(links)), "\n")); err != nil || n != 1 || !strings.Contains(string(links), "lo:") {
		t.Errorf("after Remove the namespace should hold only loopback: %v:\n%s", err, links)
	}
}

// buildRuntime writes runtimeMain into a module of its own that requires this one
// through a replace directive, and builds it.
func buildRuntime(t *testing.T) string {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ourMod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go \S+$`).Find(ourMod)
	dir := t.TempDir()
	goMod := "module example.com/runtime\n\n" + string(goLine) + "\n\n" +
		"require github.com/ctnet/ctnet v0.0.0-00010101000000-000000000000\n\n" +
		"replace github.com/ctnet/ctnet => " + repo + "\n"
	sums, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for file, content := range map[string][]byte{"go.mod": []byte(goMod), "go.sum": sums, "main.go": []byte(runtimeMain)} {
		if err := os.WriteFile(filepath.Join(dir, file), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "runtime")
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-o", bin, "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod -buildvcs=false", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s in the runtime's module: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return bin
}
