//go:build !race

package lab

const raceEnabled = false

// RaceDetector reports whether the ctnet the tests drive is built with the race
// detector (see race.go).
const RaceDetector = raceEnabled

const raceExitNow = ""
