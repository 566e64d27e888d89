// Package fault is the crash-test hook: with CTNET_TEST_KILL_AFTER=k in the
// environment, the process kills itself with SIGKILL right after its k-th kernel
// change, so tests can check that every crash point leaves a state gc can repair.
// Without the variable, Point only counts.
package fault

import (
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
)

// EnvKillAfter is the environment variable that arms the hook.
const EnvKillAfter = "CTNET_TEST_KILL_AFTER"

var (
	killAfter = func() int64 {
		n, err := strconv.ParseInt(os.Getenv(EnvKillAfter), 10, 64)
		if err != nil || n <= 0 {
			return 0
		}
		return n
	}()
	changes atomic.Int64
)

// Point marks one kernel change made.
func Point() {
	if n := changes.Add(1); killAfter > 0 && n == killAfter {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not delivered synchronously; do nothing more meanwhile.
	}
}

// Count is the number of kernel changes made so far.
func Count() int64 { return changes.Load() }
