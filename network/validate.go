package network

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Names become file names, map keys and parts of interface aliases: one conservative
// alphabet for all, as Docker uses.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

const maxNameLen = 64

func checkName(kind, name string) error {
	switch {
	case name == "":
		return invalid("%s name is empty", kind)
	case len(name) > maxNameLen:
		return invalid("%s name %q is too long: at most %d characters", kind, name, maxNameLen)
	case !nameRE.MatchString(name):
		return invalid("bad %s name %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", kind, printable(name))
	}
	return nil
}

func printable(s string) string {
	if !utf8.ValidString(s) {
		return fmt.Sprintf("%x", s)
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// isModeName reports whether a --network value names a mode rather than a network.
func isModeName(s string) bool {
	return s == "host" || s == "none" || strings.HasPrefix(s, "container:")
}

// ParseLabels turns k=v strings into a map.
func ParseLabels(items []string) (map[string]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok {
			return nil, invalid("bad label %q: use key=value", printable(it))
		}
		out[k] = v
	}
	return out, checkLabels(out)
}

func checkLabels(labels map[string]string) error {
	for k, v := range labels {
		if k == "" || len(k) > 256 || strings.ContainsAny(k, "\x00\n=") || !utf8.ValidString(k) {
			return invalid("bad label key %q: use 1 to 256 printable characters without '='", printable(k))
		}
		if len(v) > 4096 || strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
			return invalid("bad value for label %q: use at most 4096 characters of valid UTF-8", printable(k))
		}
	}
	return nil
}
