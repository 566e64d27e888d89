package e2e

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A truncated or corrupted state file makes every command fail with one line that
// names the file and says how to recover — never a panic — and changes nothing in
// the kernel; putting the good file back makes everything work again. Following the
// advice (move the file aside, run gc) removes every kernel object the lost file
// described, one report line each.
func TestCrashCorruptState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must("network", "create", "keep", "--subnet", "10.75.0.0/24")
	e.runDetached("--name", "k1", "--network", "keep", "-p", "8080:80", "--", "sleep", "600")
	e.runDetached("--name", "k2", "--", "sleep", "600")
	dbPath := filepath.Join(e.root, "state.db")
	good, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	if len(good) < 4*page {
		t.Fatalf("state.db is %d bytes: want at least 4 pages to damage", len(good))
	}
	garbage := func(n int) []byte {
		b := make([]byte, n)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		return b
	}
	cases := []struct {
		name   string
		damage func() []byte
	}{
		{"empty", func() []byte { return nil }},
		{"truncated to one page", func() []byte { return good[:page] }},
		{"truncated to half", func() []byte { return good[:len(good)/2] }},
		{"meta pages overwritten", func() []byte { return append(garbage(2*page), good[2*page:]...) }},
		{"data pages overwritten", func() []byte { return append(bytes.Clone(good[:2*page]), garbage(len(good)-2*page)...) }},
		{"zeroed", func() []byte { return make([]byte, len(good)) }},
	}
	commands := [][]string{
		{"ps", "-a"},
		{"network", "ls"},
		{"inspect", "k1"},
		{"run", "-d", "--name", "new", "--", "sleep", "600"},
		{"run", "--rm", "--", "true"},
		{"rm", "-f", "k2"},
		{"network", "create", "other"},
		{"network", "rm", "-f", "keep"},
		{"gc"},
	}
	kernel := e.kernelState()
	for _, c := range cases {
		if err := os.WriteFile(dbPath, c.damage(), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range commands {
			r := e.ctnet(args...)
			msg := strings.TrimSpace(r.Stderr)
			switch {
			case r.Code == 0:
				t.Errorf("%s: ctnet %s succeeded on a damaged state file: %s", c.name, strings.Join(args, " "), r)
			case strings.Contains(r.Stderr, "panic") || strings.Contains(r.Stderr, "goroutine "):
				t.Errorf("%s: ctnet %s panicked: %s", c.name, strings.Join(args, " "), r)
			case strings.Count(msg, "\n") > 0 || !strings.HasPrefix(msg, "ctnet: "):
				t.Errorf("%s: ctnet %s: want one line starting with \"ctnet: \", got %q", c.name, strings.Join(args, " "), msg)
			case !strings.Contains(msg, dbPath) || !strings.Contains(msg, "mv "+dbPath) || !strings.Contains(msg, "ctnet gc"):
				t.Errorf("%s: ctnet %s: the message should name %s and how to recover (mv it aside, ctnet gc): %q", c.name, strings.Join(args, " "), dbPath, msg)
			}
		}
		if diff := kernel.Diff(e.kernelState()); diff != "" {
			t.Errorf("%s: commands failing on the damaged state changed the kernel:\n%s", c.name, diff)
		}
		if err := os.WriteFile(dbPath, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if report := e.gc(); len(report) > 0 {
			t.Errorf("%s: with the good state file back, gc found work:\n%s", c.name, strings.Join(report, "\n"))
		}
		e.checkConsistent(t)
		if t.Failed() {
			t.FailNow()
		}
	}

	// The recovery the messages advise.
	st := e.store()
	if err := os.WriteFile(dbPath, good[:page], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dbPath, dbPath+".broken"); err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Containers {
		for _, pid := range []int{c.Supervisor.PID, c.Process.PID} {
			syscall.Kill(pid, syscall.SIGKILL)
			waitGone(t, pid)
		}
	}
	before := e.kernelObjects()
	report := e.gc()
	after := e.kernelObjects()
	checkReport(t, report, before, after)
	for _, c := range st.Containers {
		if !strings.Contains(strings.Join(report, "\n"), c.Networks[0].HostVeth+": ") {
			t.Errorf("gc does not report removing %s's interface %s:\n%s", c.Name, c.Networks[0].HostVeth, strings.Join(report, "\n"))
		}
	}
	if len(after.named)+len(after.tables)+len(after.elements) > 0 {
		t.Errorf("after gc with the state file moved aside, ctnet objects remain: %v %v %v", after.named, after.tables, after.elements)
	}
	if again := e.gc(); len(again) > 0 {
		t.Errorf("a second gc found more work:\n%s", strings.Join(again, "\n"))
	}
	// That ctnet turned IPv4 forwarding on was recorded in the lost file only: the
	// kernel cannot tell, so it stays on for the administrator to decide.
	e.host.Sysctl(t, "net.ipv4.ip_forward", "0")
	e.checkConsistent(t)
	os.Remove(dbPath + ".broken")
}
