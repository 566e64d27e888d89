package network

import (
	"errors"
	"fmt"

	"github.com/ctnet/ctnet/internal/fault"
)

// undo is the stack of inverse operations for the kernel changes made so far.
type undo struct {
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func() error
}

// did records a kernel change that succeeded and how to reverse it; fn may be nil for
// shared objects that outlive the operation.
func (u *undo) did(what string, fn func() error) {
	fault.Point(what)
	if fn != nil {
		u.steps = append(u.steps, undoStep{what: what, fn: fn})
	}
}

// run reverses every recorded change, newest first, and keeps going past failures.
// Each reversal is a kernel change too, and a crash point.
func (u *undo) run() error {
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.steps[i].what, err))
			continue
		}
		fault.Point("undo: " + u.steps[i].what)
	}
	u.steps = nil
	return errors.Join(errs...)
}
