package store

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// errPanicked marks an error made from a panic of the database library.
var errPanicked = errors.New("the database library panicked")

// catch turns a panic of the database library into an error: bbolt panics on some
// corrupted pages, and reading a page past the end of a truncated file faults
// (SIGBUS, or SIGSEGV past the mapping), which SetPanicOnFault turns into a panic
// instead of killing the process. Faults are caught only in this goroutine, where
// bbolt reads pages for Open, View and Update. A panic that starts in the caller's
// own code is a bug, not damage, and goes on: calling it corruption would tell the
// user to throw the database away.
func catch(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if !panickedInDatabase() {
				panic(r)
			}
			// A panic text can span lines; errors here are printed as one.
			err = fmt.Errorf("%w: %w: %s", ErrCorrupt, errPanicked, oneLine(fmt.Errorf("%v", r)))
		}
	}()
	return fn()
}

// panickedInDatabase reports, from a deferred function of a panicking goroutine,
// whether the panic started in bbolt or in this package's reading of its data: the
// first frame past the panic machinery and the standard library called from there.
func panickedInDatabase() bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if !inStandardLibrary(f.Function) {
			for _, prefix := range databaseCode {
				if strings.HasPrefix(f.Function, prefix) {
					return true
				}
			}
			return false
		}
		if !more {
			return false
		}
	}
}

// databaseCode is where a panic means the data is damaged: bbolt, and the code here
// that decodes what it returns.
var databaseCode = []string{
	"go.etcd.io/bbolt",
	"github.com/ctnet/ctnet/store.(*Tx).",
	"github.com/ctnet/ctnet/store.get[",
	"github.com/ctnet/ctnet/store.all[",
	"github.com/ctnet/ctnet/store.decode[",
	"github.com/ctnet/ctnet/store.lookupID",
	"github.com/ctnet/ctnet/store.initBuckets",
}

// inStandardLibrary reports whether a function name (as runtime.Frame gives it)
// belongs to the standard library, whose import paths have no dot in their first
// element.
func inStandardLibrary(function string) bool {
	first, _, _ := strings.Cut(function, "/")
	return !strings.Contains(first, ".") || !strings.Contains(function, "/")
}

// run calls fn, which uses the database, under catch; after a panic of bbolt the
// database is not used again.
func (s *Store) run(fn func() error) error {
	if s.broken != nil {
		return s.broken
	}
	err := catch(fn)
	if errors.Is(err, errPanicked) {
		s.broken = err
	}
	return err
}

// oneLine is an error's text on one line: messages here end up in one-line reports.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// damaged reports whether err means the database file is damaged, as opposed to
// being unreadable for another reason (permissions, a lock timeout).
func damaged(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, bolt.ErrInvalid) ||
		errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) ||
		strings.Contains(err.Error(), "file size too small")
}

// corrupt names the file in an error of verb ("open", "read", "update") and, when
// the file is damaged, says how to recover.
func (s *Store) corrupt(verb string, err error) error {
	if !damaged(err) {
		return fmt.Errorf("%s state database %s: %w", verb, s.path, err)
	}
	if !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	q := shellQuote(s.path)
	return fmt.Errorf("%s state database %s: %w (move it aside with `mv %s %s`; then `ctnet gc` removes the kernel objects it described, and networks must be created again)",
		verb, s.path, err, q, shellQuote(s.path+".broken"))
}

// shellQuote quotes a path for the command the recovery hint suggests.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=,:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
