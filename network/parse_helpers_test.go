package network

import (
	"errors"
	"testing"

	"github.com/ctnet/ctnet/internal/fixhint"
)

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
	fixhint.Require(t, input, err)
}
