//go:build ctnet_crashpoints

package fault

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

var (
	killAfter = func() int64 {
		n, err := strconv.ParseInt(os.Getenv(EnvKillAfter), 10, 64)
		if err != nil || n <= 0 {
			return 0
		}
		return n
	}()
	markerPath = os.Getenv(EnvKillMarker)
	changes    atomic.Int64

	// seen counts the crash points of each name an armed process passed, so that
	// every point it can be killed at has a name of its own ("store commit #2").
	seen struct {
		sync.Mutex
		names map[string]int
	}
)

// Point marks one crash point passed: name says what was just done.
func Point(name string) {
	if killAfter == 0 {
		return
	}
	seen.Lock()
	if seen.names == nil {
		seen.names = map[string]int{}
	}
	seen.names[name]++
	if n := seen.names[name]; n > 1 {
		name = fmt.Sprintf("%s #%d", name, n)
	}
	n := changes.Add(1)
	seen.Unlock()
	if n == killAfter {
		writeMarker(n, name)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not delivered synchronously; do nothing more meanwhile.
	}
}

// writeMarker records the step before the kill; a marker that cannot be written is
// missing, which the test reports.
func writeMarker(n int64, name string) {
	if markerPath == "" {
		return
	}
	f, err := os.OpenFile(markerPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintf(f, "%d %s\n", n, name)
	f.Sync()
	f.Close()
}
