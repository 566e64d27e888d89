// Package undo is the stack of steps that take back what an operation has done so
// far: pushed as each change succeeds, run newest first when the operation fails
// (or, for a harness, when it ends).
package undo

import (
	"errors"
	"fmt"
	"sync"
)

// Stack is a LIFO of reversing steps, safe for concurrent use. The zero Stack is
// empty and ready.
type Stack struct {
	mu    sync.Mutex
	steps []step
}

type step struct {
	what string
	fn   func() error
}

// Push records how to reverse something just done; what names it in errors.
func (s *Stack) Push(what string, fn func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps = append(s.steps, step{what, fn})
}

// Mark is the stack's depth now, for UnwindTo.
func (s *Stack) Mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.steps)
}

// UnwindTo runs, newest first, the steps pushed since mark and drops them. It keeps
// going past failures and returns them joined, each named by its step. A step may
// push steps of its own: they run too.
func (s *Stack) UnwindTo(mark int) error {
	var errs []error
	for {
		s.mu.Lock()
		if len(s.steps) <= mark {
			s.mu.Unlock()
			return errors.Join(errs...)
		}
		last := s.steps[len(s.steps)-1]
		s.steps = s.steps[:len(s.steps)-1]
		s.mu.Unlock()
		if err := last.fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", last.what, err))
		}
	}
}

// Unwind runs every step, newest first (see UnwindTo).
func (s *Stack) Unwind() error { return s.UnwindTo(0) }
