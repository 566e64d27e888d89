package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// PrivateMounts is a mount namespace in which some of the machine's directories are
// empty file systems of its own, so that a runtime that keeps state at fixed paths
// (Podman: named namespaces in /run/netns, runc's /run/runc, libcni's cache in
// /var/lib/cni, its lock in /dev/shm) runs in it without touching the machine's or
// another test's. Like Boot's, it holds no copy of the machine's namespace pins.
// Processes started there stay there, and what they mount is seen only there.
type PrivateMounts struct {
	// Path pins the mount namespace: nsenter --mount=Path enters it.
	Path string
}

// NewPrivateMounts makes a mount namespace with an empty tmpfs over each of dirs,
// which must exist. It is released at cleanup, once its last process has ended.
func NewPrivateMounts(t testing.TB, dirs ...string) *PrivateMounts {
	t.Helper()
	for _, d := range dirs {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Fatalf("private mounts: %s is not a directory: %v", d, err)
		}
	}
	dir := t.TempDir()
	// unshare pins a mount namespace only on a mount that does not propagate.
	mustRun(t, "mount", "--bind", dir, dir)
	pm := &PrivateMounts{Path: filepath.Join(dir, "mnt")}
	t.Cleanup(func() {
		for _, target := range []string{pm.Path, dir} {
			if out, err := exec.Command("umount", target).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", target, err, out)
			}
		}
	})
	mustRun(t, "mount", "--make-private", dir)
	if err := os.WriteFile(pm.Path, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	mustRun(t, append([]string{"unshare", "--mount=" + pm.Path, "--propagation", "private", "sh", "-c",
		// A pin its owner removes meanwhile fails its umount, which is as good.
		`umount -a -l -t nsfs; set -e; for d; do mount -t tmpfs -o mode=0755 ctnet-private "$d"; done`, "sh"}, dirs...)...)
	return pm
}

// Share makes the machine's namespace pin at path (such as a sandbox's /run/netns
// file) pin the same namespace in the mount namespace too, until cleanup, for a
// runtime there that is handed the path.
func (pm *PrivateMounts) Share(t testing.TB, path string) {
	t.Helper()
	mustRun(t, "nsenter", "--net="+path, "--mount="+pm.Path, "mount", "--bind", "/proc/self/ns/net", path)
	t.Cleanup(func() {
		if out, err := exec.Command("nsenter", "--mount="+pm.Path, "umount", path).CombinedOutput(); err != nil {
			t.Errorf("umount %s in the private mounts: %v: %s", path, err, out)
		}
	})
}
