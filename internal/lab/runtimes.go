package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testToolsDir is where scripts/deps.sh installs the tools Debian does not package,
// each named with its version (crictl-v1.34.0, cnitool-v1.3.1).
const testToolsDir = "/usr/local/lib/ctnet-test"

// TestTool returns the path of a tool scripts/deps.sh installs at a fixed version,
// such as TestTool(t, "crictl-v1.34.0"); it is missing otherwise.
func TestTool(t testing.TB, nameVersion string) string {
	t.Helper()
	path := filepath.Join(testToolsDir, nameVersion)
	if _, err := os.Stat(path); err != nil {
		Missing(t, "needs %s (scripts/deps.sh installs it): %v", path, err)
	}
	return path
}

// BusyboxRootfs returns a directory, removed at cleanup, holding a root filesystem
// made of Debian's busybox-static: bin/busybox and a link for each of its applets, and
// the directories a runtime mounts over. Real runtimes run it without pulling an
// image. Its wget crashes on this machine: use nc or httpd.
func BusyboxRootfs(t testing.TB) string {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		Missing(t, "needs busybox (Debian's busybox-static)")
	}
	dir := t.TempDir()
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", busybox, filepath.Join(dir, "bin", "busybox")).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox: %v: %s", err, out)
	}
	applets, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	// Relative links: busybox --install -s writes absolute ones, which point outside
	// the container's root.
	for _, applet := range strings.Fields(string(applets)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
