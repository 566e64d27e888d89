package netns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mountsUnder lists the mount points at or below dir.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// The pin directory is a mount point while it holds pins, made on the first and
// released with the last; one that holds pins already (an older ctnet's) is left as
// it is, its pins usable, until it empties.
func TestPinDir(t *testing.T) {
	if os.Geteuid() != 0 {
		// internal/lab, whose Missing this is, cannot be imported here: it imports netns.
		if os.Getenv("CTNET_REQUIRE_ALL") == "1" {
			t.Fatal("needs root: it mounts (CTNET_REQUIRE_ALL=1 makes a missing prerequisite a failure)")
		}
		t.Skip("needs root: it mounts")
	}
	dir := filepath.Join(t.TempDir(), "netns")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Mounts can stack on one path: unmount until none is left.
		for range 10 {
			for _, m := range mountsUnder(dir) {
				unix.Unmount(m, unix.MNT_DETACH)
			}
		}
	})
	old := filepath.Join(dir, "old")
	if err := os.WriteFile(old, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := OnThread(func(th *Thread) error {
		if err := th.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		return unix.Mount("/proc/thread-self/ns/net", old, "none", unix.MS_BIND, "")
	}); err != nil {
		t.Fatal(err)
	}
	pin := func(name string, wantDirMounted bool) {
		t.Helper()
		ns, err := New(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		ns.Close()
		if mounted, err := isMountPoint(dir); err != nil || mounted != wantDirMounted {
			t.Errorf("after pinning %s: %s is a mount point: %v, %v; want %v", name, dir, mounted, err, wantDirMounted)
		}
	}
	remove := func(names ...string) {
		t.Helper()
		for _, name := range names {
			if err := Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pin("beside-old", false)
	if prev, err := Open(old); err != nil {
		t.Errorf("an older ctnet's pin: %v", err)
	} else {
		prev.Close()
	}
	remove("old", "beside-old")
	pin("first", true)
	pin("second", true)
	remove("first")
	if mounted, _ := isMountPoint(dir); !mounted {
		t.Errorf("%s stopped being a mount point while it still holds a pin", dir)
	}
	remove("second")
	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left after the last pin was removed: %v", m)
	}
}

// threadsElsewhere lists the process's threads whose network or UTS namespace is
// not the process's.
func threadsElsewhere(t *testing.T) []string {
	t.Helper()
	want := map[string]string{}
	for _, kind := range []string{"net", "uts"} {
		want[kind], _ = os.Readlink("/proc/self/ns/" + kind)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, task := range tasks {
		for kind, ns := range want {
			if got, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/" + kind); err == nil && got != ns {
				out = append(out, task.Name()+" in "+got)
			}
		}
	}
	return out
}

// A thread OnThread lent goes back into the namespaces it left (or is ended with
// its goroutine), so no thread of the process stays in a container's namespaces.
func TestOnThreadPutsThreadsBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes namespaces")
	}
	dir := t.TempDir()
	ns, err := New(filepath.Join(dir, "ns"))
	if err != nil {
		t.Fatal(err)
	}
	defer Remove(ns.Path())
	defer ns.Close()
	for i := range 20 {
		err := OnThread(func(th *Thread) error {
			if err := th.Enter(ns.Path(), unix.CLONE_NEWNET); err != nil {
				return err
			}
			if err := th.Unshare(unix.CLONE_NEWUTS); err != nil {
				return err
			}
			if err := unix.Sethostname([]byte("elsewhere")); err != nil {
				return err
			}
			// The positive control: while lent, the thread is seen elsewhere.
			if len(threadsElsewhere(t)) == 0 {
				t.Error("the lent thread's namespaces are not seen as another's")
			}
			if i%2 == 0 {
				return th.Unshare(unix.CLONE_NEWNS)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if left := threadsElsewhere(t); len(left) > 0 {
		t.Errorf("threads left in other namespaces: %v", left)
	}
}

// The process's namespace, read on first use, is the process's even when the
// first to ask is a function whose thread OnThread moved into another.
func TestProcessNSFromAMovedThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes namespaces")
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil { // the main thread's, none moved yet
		t.Fatal(err)
	}
	ns, err := New(filepath.Join(t.TempDir(), "ns"))
	if err != nil {
		t.Fatal(err)
	}
	defer Remove(ns.Path())
	defer ns.Close()
	err = OnThread(func(th *Thread) error {
		if err := th.Enter(ns.Path(), unix.CLONE_NEWNET); err != nil {
			return err
		}
		var here unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &here); err != nil {
			return err
		}
		if here.Ino == st.Ino { // the positive control: this thread is elsewhere
			t.Error("the lent thread reads as in the process's namespace")
		}
		if got := readProcessNS(); got != st.Ino {
			t.Errorf("from a moved thread, the process's namespace reads as %d, want %d (this thread's is %d)", got, st.Ino, here.Ino)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
