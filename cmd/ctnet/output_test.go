package main

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
)

func TestPrintable(t *testing.T) {
	cases := []struct {
		name, in, keep, want string
	}{
		{"plain text is unchanged", "web-1 172.18.0.2/16", "", "web-1 172.18.0.2/16"},
		{"printable unicode is unchanged", "café ☕", "", "café ☕"},
		{"window title sequence", "\x1b]0;pwned\x07", "", `\x1b]0;pwned\x07`},
		{"clear screen", "a\x1b[2Jb", "", `a\x1b[2Jb`},
		{"DEL", "a\x7fb", "", `a\x7fb`},
		{"C1 control (CSI)", "a\u009bb", "", `a\u009bb`},
		{"bidi override", "abc\u202edef", "", `abc\u202edef`},
		{"not UTF-8", "a\xffb", "", `a\xffb`},
		{"newline and tab in a cell", "a\nb\tc", "", `a\x0ab\x09c`},
		{"newline and tab kept for layout", "a\nb\tc\x1b", "\n\t", "a\nb\tc\\x1b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := printable(c.in, c.keep); got != c.want {
				t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

// A table cell cannot add a row or a column, and free-form output keeps its layout
// while losing its escape sequences.
func TestTerminalOutputEscapes(t *testing.T) {
	var buf bytes.Buffer
	tab := newTable(&buf, "NAME", "IP")
	tab.row("evil\n\x1b[2Jforged\trow", "10.0.0.2")
	tab.flush()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 || strings.ContainsAny(buf.String(), "\x1b\t") {
		t.Errorf("table with a hostile cell:\n%q", buf.String())
	}
	buf.Reset()
	w := terminalText(&buf)
	w.Write([]byte("  name:\t\x1b]0;title\x07\n"))
	if got, want := buf.String(), "  name:\t\\x1b]0;title\\x07\n"; got != want {
		t.Errorf("terminalText wrote %q, want %q", got, want)
	}
}

// svgText escapes as encoding/xml's EscapeText, which it stands in for.
func TestSVGTextEscapesAsXML(t *testing.T) {
	for _, s := range []string{"web", `a"b'c&d<e>f`, "tab\tnl\ncr\r", "ctl\x01\x1b[31m", "bad utf8 \xff\xfe", "ümlaut 日本 🙂", "\ufffe\uffff\U0010ffff", ""} {
		var want strings.Builder
		xml.EscapeText(&want, []byte(s))
		if got := svgText(s); got != want.String() {
			t.Errorf("svgText(%q) = %q, encoding/xml: %q", s, got, want.String())
		}
	}
}
