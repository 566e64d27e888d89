package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"text/template"
	"unicode"
)

// A --format is "table" (ctnet's columns), "json" (ctnet's JSON, documented with the
// library's types), or a Go template as Docker takes it: executed once per item, or,
// after "table ", once per row under a header row named after the fields.

// isTemplate says whether format is a Go template rather than one of ctnet's own.
func isTemplate(format string) bool { return format != "" && format != "table" && format != "json" }

// templateFuncs are Docker's --format functions.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  strings.Join,
	"split": strings.Split,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	"truncate": func(s string, n int) string {
		if len(s) > n {
			return s[:n]
		}
		return s
	},
	"pad": func(s string, before, after int) string {
		return strings.Repeat(" ", before) + s + strings.Repeat(" ", after)
	},
	"println": fmt.Sprintln,
}

// parseTemplate parses a --format template and checks it against T's fields, so that
// a misspelt field is refused before anything is printed even with no items.
func parseTemplate[T any](format string) (*template.Template, bool, error) {
	body, isTable := strings.CutPrefix(format, "table ")
	tmpl, err := template.New("").Funcs(templateFuncs).Parse(expandEscapes(body))
	if err != nil {
		return nil, false, usage("bad --format %q: %v", format, err)
	}
	var zero T
	if err := tmpl.Execute(io.Discard, zero); err != nil {
		return nil, false, usage("bad --format %q: %v", format, err)
	}
	return tmpl, isTable, nil
}

// expandEscapes turns the \t and \n a shell passes literally into tabs and newlines,
// as Docker does.
func expandEscapes(s string) string {
	return strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(s)
}

// writeTemplate prints items through a --format template: one line per item, or a
// table with a header row after "table ".
func writeTemplate[T any](w io.Writer, format string, items []T) error {
	tmpl, isTable, err := parseTemplate[T](format)
	if err != nil {
		return err
	}
	out := w
	var tw *tabwriter.Writer
	if isTable {
		tw = tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		var header bytes.Buffer
		if err := tmpl.Execute(&header, headersOf[T]()); err != nil {
			return err
		}
		fmt.Fprintln(tw, header.String())
		out = tw
	}
	for _, item := range items {
		var line bytes.Buffer
		if err := tmpl.Execute(&line, item); err != nil {
			return err
		}
		fmt.Fprintln(out, strings.TrimSuffix(line.String(), "\n"))
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// headered is a row type that names some of its columns other than by their field.
type headered interface{ headers() map[string]string }

// headerRow is a table template's header row: each field's column header, and
// Label "KEY"'s, which is Docker's: the key's last dot-separated part, '-' and '_'
// as spaces.
type headerRow map[string]string

func (headerRow) Label(key string) string {
	return strings.NewReplacer("-", " ", "_", " ").Replace(key[strings.LastIndex(key, ".")+1:])
}

// headersOf maps each of T's fields to its column header: the field's words in
// upper case ("RunningFor" is "RUNNING FOR"), unless T says otherwise.
func headersOf[T any]() headerRow {
	var zero T
	h := headerRow{}
	rt := reflect.TypeOf(zero)
	for rt != nil && rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	if rt != nil && rt.Kind() == reflect.Struct {
		for i := 0; i < rt.NumField(); i++ {
			if f := rt.Field(i); f.IsExported() {
				h[f.Name] = headerWords(f.Name)
			}
		}
	}
	if own, ok := any(zero).(headered); ok {
		for k, v := range own.headers() {
			h[k] = v
		}
	}
	return h
}

func headerWords(name string) string {
	var b strings.Builder
	runes := []rune(name)
	for i, r := range runes {
		if i > 0 && unicode.IsUpper(r) && (unicode.IsLower(runes[i-1]) || i+1 < len(runes) && unicode.IsLower(runes[i+1])) {
			b.WriteByte(' ')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// parseInspectTemplate parses an inspect --format template, which is executed on
// objects of more than one kind and so is checked on each.
func parseInspectTemplate(format string) (*template.Template, error) {
	tmpl, err := template.New("").Funcs(templateFuncs).Parse(expandEscapes(format))
	if err != nil {
		return nil, usage("bad --format %q: %v", format, err)
	}
	return tmpl, nil
}
