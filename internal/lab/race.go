//go:build race

package lab

// raceEnabled: the tests run under the race detector, and so does the ctnet they drive.
const raceEnabled = true

// RaceDetector reports whether the ctnet the tests drive is built with the race
// detector, whose shadow memory multiplies a process's resident size (by 5 to 10, its
// documentation says): a test that bounds memory scales its bound by it.
const RaceDetector = raceEnabled

// raceExitNow is the GORACE option that spares every process the race detector's
// default second of sleep at exit: each ctnet command would take a second longer.
const raceExitNow = "atexit_sleep_ms=0"
