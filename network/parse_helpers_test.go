package network

import (
	"errors"
	"strings"
	"testing"
)

// fixHints are the words by which an error message tells the user what to do
// instead: an allowed form ("use key=value"), an example ("want ... like"), a bound
// ("at most 64") or a correction ("did you mean").
var fixHints = []string{"use ", "want ", "did you mean", "at most", "must be", "e.g."}

// requireFixableInputError fails unless err is what every refusal of user input
// must be: an ErrInvalid whose message is one non-empty line saying what to fix.
func requireFixableInputError(t *testing.T, input any, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%q: no error", input)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("%q: error %q does not match ErrInvalid", input, err)
	}
	requireOneLineHint(t, input, err.Error())
}

// requireOneLineHint fails unless msg is one non-empty line that says what to fix.
func requireOneLineHint(t *testing.T, input any, msg string) {
	t.Helper()
	if strings.TrimSpace(msg) == "" {
		t.Fatalf("%q: empty error message", input)
	}
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("%q: error message spans lines: %q", input, msg)
	}
	for _, h := range fixHints {
		if strings.Contains(msg, h) {
			return
		}
	}
	t.Errorf("%q: error message %q does not say what to fix (none of %q)", input, msg, fixHints)
}
