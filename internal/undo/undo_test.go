package undo

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestUnwindOrderMarksAndErrors(t *testing.T) {
	var s Stack
	var ran []string
	step := func(name string, err error) func() error {
		return func() error { ran = append(ran, name); return err }
	}
	s.Push("a", step("a", nil))
	s.Push("b", step("b", errors.New("b failed")))
	mark := s.Mark()
	s.Push("c", step("c", nil))
	s.Push("d", step("d", errors.New("d failed")))
	err := s.UnwindTo(mark)
	if !slices.Equal(ran, []string{"d", "c"}) {
		t.Errorf("UnwindTo(mark) ran %v, want [d c]", ran)
	}
	if err == nil || err.Error() != "d: d failed" {
		t.Errorf("UnwindTo(mark) = %v, want the failed step named", err)
	}
	if s.Mark() != mark {
		t.Errorf("depth %d after UnwindTo(%d)", s.Mark(), mark)
	}
	ran = nil
	// A failure does not stop the steps below it.
	err = s.Unwind()
	if !slices.Equal(ran, []string{"b", "a"}) {
		t.Errorf("Unwind ran %v, want [b a]", ran)
	}
	if err == nil || !strings.Contains(err.Error(), "b: b failed") {
		t.Errorf("Unwind = %v, want b's failure", err)
	}
	if s.Unwind() != nil || s.Mark() != 0 {
		t.Error("a second Unwind found steps")
	}
}
