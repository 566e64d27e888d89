package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/proc"
)

// A rootless container's user-mode network runs in a ctnet-usernet process its
// supervisor starts, which serves the published port, and which ends with the
// supervisor even when that is killed: nothing of the network outlives it.
func TestRootlessUserNetEndsWithSupervisor(t *testing.T) {
	u := newUserEnv(t)
	helper := lab.UserNetHelper(t)
	u.must(append([]string{"run", "-d", "--name", "srv", "-p", "8086:8000", "--"}, peerServer(8000)...)...)
	answers := func() bool {
		out, err := u.host.Try("socat", "-T2", "-", "TCP:127.0.0.1:8086,connect-timeout=2")
		return err == nil && strings.TrimSpace(out) != ""
	}
	if !eventually(answers) {
		t.Fatal("the published port does not answer")
	}
	var c container
	(&env{t: t}).decodeInspected(u.must("inspect", "--format", "json", "srv"), &c)
	network := childrenOf(c.Supervisor.PID, helper)
	if len(network) != 1 {
		t.Fatalf("want one %s process started by the supervisor %d, got %v", helper, c.Supervisor.PID, network)
	}

	syscall.Kill(c.Supervisor.PID, syscall.SIGKILL)
	waitGone(t, c.Supervisor.PID)
	waitGone(t, network[0])
	if answers() {
		t.Error("the published port still answers after the user-mode network ended")
	}
	syscall.Kill(c.Process.PID, syscall.SIGKILL)
	waitGone(t, c.Process.PID)
	u.must("rm", "-f", "srv")
}

// childrenOf lists the running processes of the executable exe whose parent is pid.
func childrenOf(pid int, exe string) []int {
	var out []int
	for _, p := range proc.OfExecutable(exe) {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, the last ')' ends it.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// doctor says whether ctnet-usernet is beside ctnet, and how to put it there.
func TestDoctorRootlessUserNetHelper(t *testing.T) {
	host := lab.NewSandbox(t)
	root := lab.Root(t)
	helper := lab.UserNetHelper(t)
	if r := host.Ctnet(t, root, "doctor", "--rootless"); !strings.Contains(r.Stdout, "ok: the user-mode network's helper is beside ctnet: "+helper) {
		t.Errorf("ctnet doctor --rootless with ctnet-usernet beside ctnet: %s", r)
	}
	alone := filepath.Join(t.TempDir(), "ctnet")
	if out, err := exec.Command("cp", lab.Binary(t), alone).CombinedOutput(); err != nil {
		t.Fatalf("copy ctnet: %v: %s", err, out)
	}
	out, err := host.Try(alone, "--root", root, "doctor", "--rootless")
	if err == nil || !strings.Contains(out, "problem: the user-mode network needs ctnet-usernet beside "+alone) ||
		!strings.Contains(out, "go build -o DIR/ ./cmd/ctnet ./cmd/ctnet-usernet") {
		t.Errorf("ctnet doctor --rootless without ctnet-usernet beside ctnet: want a problem saying how to build it, got %v: %s", err, out)
	}
}
