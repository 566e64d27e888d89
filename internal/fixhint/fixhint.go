// Package fixhint is the tests' one check of what every refusal of user input must
// be: one non-empty line that says what to fix.
package fixhint

import (
	"strings"
	"testing"
)

// Words are those by which an error message tells the user what to do instead: an
// allowed form ("use key=value"), an example ("want ... like", "e.g."), a bound
// ("at most 64", "must be") or a correction ("did you mean").
var Words = []string{"use ", "want ", "did you mean", "at most", "must be", "e.g."}

// Require fails t unless err is one non-empty line that says what to fix; input is
// what was refused, for the failure message.
func Require(t testing.TB, input any, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%q: no error", input)
	}
	msg := err.Error()
	if strings.TrimSpace(msg) == "" {
		t.Fatalf("%q: empty error message", input)
	}
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("%q: error message spans lines: %q", input, msg)
	}
	for _, w := range Words {
		if strings.Contains(msg, w) {
			return
		}
	}
	t.Errorf("%q: error message %q does not say what to fix (none of %q)", input, msg, Words)
}
