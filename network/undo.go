package network

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ctnet/ctnet/internal/fault"
)

// undo is the stack of inverse operations for the kernel changes made so far.
type undo struct {
	steps []undoStep
	// log, when set, receives each step at debug level (--debug), with the time
	// since start, when the change began.
	log   *slog.Logger
	start time.Time
}

// debug logs a step of the change at debug level.
func (u *undo) debug(msg, what string) {
	if u.log != nil {
		u.log.Debug(msg, "step", what, "elapsed", time.Since(u.start))
	}
}

type undoStep struct {
	what string
	fn   func() error
}

// failStep is nil except in this package's tests, which set it to make a change fail
// right after a step, as if the step after it had failed: when it returns an error
// for a step (push or step), it raises it (a panic, so that no caller grows a branch
// production never takes) and failedStep, deferred by mutate, turns it back into the
// change's error, which mutate then undoes like any other.
var failStep func(step string) error

// injectedFailure carries failStep's error from stepDone to failedStep.
type injectedFailure struct{ err error }

// push records a kernel change that succeeded and how to reverse it. It is a crash
// point, as every step is.
func (u *undo) push(what string, fn func() error) {
	u.steps = append(u.steps, undoStep{what: what, fn: fn})
	u.debug("kernel change", what)
	stepDone(what)
}

// step marks a kernel change that succeeded with nothing of its own to reverse: a
// shared object that outlives the change, part of an object whose undo is already
// pushed, or a teardown. It is a crash point.
func (o *op) step(what string) {
	o.undo.debug("kernel change", what)
	stepDone(what)
}

// stepDone is the crash point after a step, and the place where tests make the
// change fail (failStep).
func stepDone(what string) {
	fault.Point(what)
	if failStep != nil {
		if err := failStep(what); err != nil {
			panic(injectedFailure{err})
		}
	}
}

// failedStep, deferred, sets *err to the error failStep injected; any other panic
// goes on.
func failedStep(err *error) {
	if failStep == nil {
		return
	}
	if r := recover(); r != nil {
		f, ok := r.(injectedFailure)
		if !ok {
			panic(r)
		}
		*err = f.err
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
		u.debug("undone", u.steps[i].what)
		fault.Point("undo: " + u.steps[i].what)
	}
	u.steps = nil
	return errors.Join(errs...)
}
