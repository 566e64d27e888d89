package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

func addFormatFlag(cmd *cobra.Command, format *string) {
	cmd.Flags().StringVar(format, "format", "table", `output format: table, json, or a Go template ('{{.Name}}', '{{json .}}', 'table {{.ID}}\t{{.Name}}')`)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints aligned columns.
type table struct{ w *tabwriter.Writer }

func newTable(w io.Writer, headers ...string) *table {
	t := &table{w: tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)}
	t.row(headers...)
	return t
}

// row escapes each cell whole, tabs and newlines too, so that no cell can shift the
// columns or forge a row.
func (t *table) row(cells ...string) {
	escaped := make([]string, len(cells))
	for i, c := range cells {
		escaped[i] = printable(c, "")
	}
	fmt.Fprintln(t.w, strings.Join(escaped, "\t"))
}

func (t *table) flush() error { return t.w.Flush() }

// printable escapes what a terminal would act on rather than show: control characters
// (escape sequences that set the window title or clear the screen), DEL, C1 controls,
// invisible formatting such as bidi overrides, and bytes that are not UTF-8, written
// as Go writes them in a string literal. Table and inspect output carries names chosen
// inside containers (interface names may hold any byte but '/', ':' and white space),
// and the operator's terminal must not obey them. Runes in keep pass unchanged.
func printable(s, keep string) string {
	safe := func(r rune, size int) bool {
		return (unicode.IsPrint(r) && !(r == utf8.RuneError && size == 1)) || strings.ContainsRune(keep, r)
	}
	clean := true
	for i := 0; i < len(s) && clean; {
		r, size := utf8.DecodeRuneInString(s[i:])
		clean = safe(r, size)
		i += size
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case safe(r, size):
			b.WriteString(s[i : i+size])
		case size == 1 && r == utf8.RuneError, r < utf8.RuneSelf:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		default:
			fmt.Fprintf(&b, "\\u%04x", r)
		}
		i += size
	}
	return b.String()
}

// terminalText is w for free-form human output (inspect, gc, doctor): every write is
// passed through printable, keeping the newlines and tabs the output is laid out with.
func terminalText(w io.Writer) io.Writer { return terminalWriter{w} }

type terminalWriter struct{ w io.Writer }

func (t terminalWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(t.w, printable(string(p), "\n\t")); err != nil {
		return 0, err
	}
	return len(p), nil
}
