package netns

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Change is one kernel change as the command line that makes the same change:
// iproute2's ip, nft, sysctl, or the few tools that make a namespace. The code that
// changes the kernel builds it from the values it applies, next to the request, and
// makes the change through NS.Change, so that what --dry-run and --explain print is
// what ctnet does.
type Change struct {
	Argv []string
	// Stdin is a script the command reads (nft -f -), printed as a here-document.
	Stdin string
}

// Journal receives every change made through the namespaces it is given to: it
// writes each one as a shell line, and with DryRun makes none. The lines of a
// namespace other than Host run in it through nsenter; the host's run where the
// reader runs them, which is the host namespace of the ctnet that printed them.
type Journal struct {
	DryRun bool
	Out    io.Writer
	// Host is the namespace whose changes are printed without nsenter.
	Host *NS

	mu sync.Mutex
}

// ErrDryRun is what a namespace that a dry run only pretends to make answers any
// request for its handles with: nothing may read back what was never made.
var ErrDryRun = errors.New("the namespace does not exist: this is a dry run")

// Unsupported is the error of a change the journal cannot show: in a dry run or an
// explained run, the command stops before making it rather than make it unseen.
func (j *Journal) Unsupported(what string) error {
	if j == nil {
		return nil
	}
	return fmt.Errorf("--dry-run and --explain do not cover %s yet: run the command without them", what)
}

// Comment records a step that is not a kernel change, as a shell comment: what a
// dry run skips and a real run does besides (files, processes).
func (j *Journal) Comment(text string) {
	if j == nil {
		return
	}
	j.line("# " + text)
}

// record writes the change as the line that makes it in ns.
func (j *Journal) record(ns *NS, c Change) {
	argv := c.Argv
	if ns != nil && ns != j.Host {
		argv = append([]string{"nsenter", "--net=" + ns.path}, argv...)
	}
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	line := strings.Join(quoted, " ")
	if c.Stdin != "" {
		line += " <<'EOF'\n" + strings.TrimSuffix(c.Stdin, "\n") + "\nEOF"
	}
	j.line(line)
}

// apply records the change and, unless this is a dry run, makes it.
func (j *Journal) apply(ns *NS, c Change, fn func() error) error {
	if j == nil {
		return fn()
	}
	j.record(ns, c)
	if j.DryRun {
		return nil
	}
	return fn()
}

// shellQuote quotes s for a POSIX shell, unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,+%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// SetJournal makes every change through n go through j (nil: none).
func (n *NS) SetJournal(j *Journal) { n.journal = j }

// Journal is the journal changes through n go through, or nil.
func (n *NS) Journal() *Journal { return n.journal }

// DryRun reports whether changes through n are only printed.
func (n *NS) DryRun() bool { return n.journal != nil && n.journal.DryRun }

// Change makes a kernel change in n: fn applies it, c is its command line. With a
// journal the line is printed first, and in a dry run fn is not called.
func (n *NS) Change(c Change, fn func() error) error {
	return n.journal.apply(n, c, fn)
}

// Changes is Change for changes fn makes at once (one batch of requests): with a
// journal their lines are printed in order first.
func (n *NS) Changes(cs []Change, fn func() error) error {
	if n.journal == nil {
		return fn()
	}
	for _, c := range cs {
		n.journal.record(n, c)
	}
	if n.journal.DryRun {
		return nil
	}
	return fn()
}

// NewIn is New with its changes through j: in a dry run it makes nothing and returns
// a namespace that exists only in the journal's lines, whose handles cannot be had.
func NewIn(j *Journal, path string) (*NS, error) {
	if j != nil {
		d, p := shellQuote(filepath.Dir(path)), shellQuote(path)
		j.line(fmt.Sprintf("mkdir -p -m 0700 %s", d)) // the root's directory, which ctnet makes first
		j.line(fmt.Sprintf("mountpoint -q %s || { mount --bind %s %s && mount --make-private %s; }", d, d, d, d))
		j.line(fmt.Sprintf("touch %s && unshare --net=%s true", p, p))
		if j.DryRun {
			return &NS{path: path, journal: j}, nil
		}
	}
	ns, err := New(path)
	if err != nil {
		return nil, err
	}
	ns.journal = j
	return ns, nil
}

// RemoveIn is Remove with its changes through j.
func RemoveIn(j *Journal, path string) error {
	if j == nil {
		return Remove(path)
	}
	dir, p := shellQuote(filepath.Dir(path)), shellQuote(path)
	j.line(fmt.Sprintf("umount --lazy %s; rm -f %s", p, p))
	if others, err := os.ReadDir(filepath.Dir(path)); err == nil && len(others) == 1 && others[0].Name() == filepath.Base(path) {
		j.line(fmt.Sprintf("umount --lazy %s", dir)) // ReleasePinDir's: the last pin went
	}
	if j.DryRun {
		return nil
	}
	return Remove(path)
}

// line writes one line as it is.
func (j *Journal) line(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	fmt.Fprintln(j.Out, s)
}
