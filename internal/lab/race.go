//go:build race

package lab

// raceEnabled: the tests run under the race detector, and so does the ctnet they drive.
const raceEnabled = true
