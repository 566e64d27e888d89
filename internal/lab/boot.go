package lab

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Boot stands in for a later boot of the machine, without a hook in the product: a
// mount namespace in which /proc/sys/kernel/random/boot_id, where ctnet reads which
// boot it runs in, holds an id of its own. A sandbox whose Boot is set runs its
// commands there (Sandbox.Command); the processes they start stay there, and mounts
// they make (ctnet's namespace pins) are seen only there, as a new boot starts with
// none of the old one's. Named namespaces (/run/netns) are not seen there.
type Boot struct {
	dir     string // a private mount point holding the id file and the namespace's pin
	mountNS string
}

// NewBoot makes the mount namespace of a new boot. Close it after the last command
// run in it.
func NewBoot(t testing.TB) *Boot {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctnet-boot-")
	if err != nil {
		t.Fatal(err)
	}
	b := &Boot{dir: dir, mountNS: filepath.Join(dir, "mnt")}
	// unshare pins a mount namespace only on a mount that does not propagate.
	mustRun(t, "mount", "--bind", dir, dir)
	mustRun(t, "mount", "--make-private", dir)
	idFile := filepath.Join(dir, "boot_id")
	if err := os.WriteFile(idFile, []byte(randomUUID()+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.mountNS, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	// Private: the bind over boot_id must not reach the machine's mount namespace.
	// The copies of the machine's namespace pins (other tests' sandboxes and
	// containers) go: they would keep those namespaces alive after their owners
	// remove them (one its owner removes meanwhile fails its umount, which is as
	// good). An empty /run/netns keeps ip from naming namespaces by pins that are no
	// longer there.
	mustRun(t, "unshare", "--mount="+b.mountNS, "--propagation", "private", "sh", "-c",
		`umount -a -l -t nsfs; set -e; mount --bind "$1" /proc/sys/kernel/random/boot_id; mkdir -p /run/netns; mount -t tmpfs -o mode=0755 ctnet-boot /run/netns`,
		"sh", idFile)
	return b
}

// Close releases the boot's mount namespace (it ends with the last process in it)
// and removes its files.
func (b *Boot) Close() error {
	var errs []error
	for _, args := range [][]string{{"umount", b.mountNS}, {"umount", b.dir}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, os.RemoveAll(b.dir))
	}
	return errors.Join(errs...)
}

func randomUUID() string {
	u := make([]byte, 16)
	rand.Read(u)
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}
