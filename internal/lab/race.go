//go:build race

package lab

// raceEnabled: the tests run under the race detector, and so does the ctnet they drive.
const raceEnabled = true

// raceExitNow is the GORACE option that spares every process the race detector's
// default second of sleep at exit: each ctnet command would take a second longer.
const raceExitNow = "atexit_sleep_ms=0"
