package proc_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/proc"
)

// envVisit makes the test binary a visitor of the namespace it names: its main
// thread enters it, its other threads stay where they are, as a ctnet command's
// main thread does while it configures a container.
const envVisit = "CTNET_PROC_TEST_VISIT"

func init() {
	path := os.Getenv(envVisit)
	if path == "" {
		return
	}
	runtime.LockOSThread() // init runs on the main thread
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(fd, unix.CLONE_NEWNET)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
	os.Exit(0)
}

// KillInNetNS ends a container's processes, every thread of which is in its
// namespace, and leaves alone a process that only visits it with one thread (the
// main one here, whose namespace /proc/PID/ns/net shows): the ctnet command
// removing the container, which a supervisor ending the container killed before.
func TestKillInNetNSSparesVisitors(t *testing.T) {
	sb := lab.NewSandbox(t)
	ino := proc.NetNSInode(sb.Path)
	resident := sb.Command(context.Background(), "sleep", "600")
	if err := resident.Start(); err != nil {
		t.Fatal(err)
	}
	residentDone := make(chan struct{})
	go func() { resident.Wait(); close(residentDone) }()
	t.Cleanup(func() { resident.Process.Kill(); <-residentDone })

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	visitor := exec.Command(self, "-test.run=^$")
	visitor.Env = append(os.Environ(), envVisit+"="+sb.Path)
	out, err := visitor.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := visitor.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { visitor.Process.Kill(); visitor.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("the visitor did not enter the namespace: %q", line)
	}
	deadline := time.Now().Add(5 * time.Second)
	for proc.NetNSInode(fmt.Sprintf("/proc/%d/ns/net", resident.Process.Pid)) != ino && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // nsenter has not yet become sleep
	}
	if got := proc.NetNSInode(fmt.Sprintf("/proc/%d/ns/net", visitor.Process.Pid)); got != ino {
		t.Fatalf("the visitor's main thread is in namespace %d, not the sandbox's %d", got, ino)
	}

	proc.KillInNetNS(ino)
	select {
	case <-residentDone:
	case <-time.After(5 * time.Second):
		t.Errorf("the process living in the namespace survived KillInNetNS")
	}
	// KillInNetNS returns once what it kills is gone (a zombie: the test has not
	// reaped it).
	if !proc.Running(visitor.Process.Pid) {
		t.Errorf("KillInNetNS killed a process that only visits the namespace")
	}
	if proc.NetNSInUse(ino) {
		t.Errorf("NetNSInUse counts a visitor as the namespace's")
	}
}
