package network

import (
	"maps"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"Web-1_a.b", true},
		{"0", true},
		{"a..b", true}, // dots inside a name cannot leave a directory: the name starts with a letter
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"-rf", false},
		{"_x", false},
		{"a/b", false},
		{"../etc", false},
		{"a\x00b", false},
		{"a b", false},
		{"a\nb", false},
		{"web\n", false}, // `$` must not match before a final newline
		{"caf\u00e9", false},
		{"a:b", false},
		{"\xff", false},
	}
	for _, tt := range tests {
		err := checkName("network", tt.name)
		if tt.ok {
			if err != nil {
				t.Errorf("checkName(%q) = %v, want nil", tt.name, err)
			}
			continue
		}
		requireFixableInputError(t, tt.name, err)
		if !strings.Contains(err.Error(), "network name") {
			t.Errorf("checkName(%q): error %q does not say which name", tt.name, err)
		}
	}
}

// FuzzCheckName checks that an accepted container or network name is safe as one
// path element and map key: no separator, no NUL, not "." or "..", at most 64 bytes.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"web", "a..b", "..", ".", "a/b", "a\x00", strings.Repeat("x", 65), "web\n", "bridge", "host"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := checkName("container", name)
		if err != nil {
			requireFixableInputError(t, name, err)
			return
		}
		switch {
		case name == "" || len(name) > maxNameLen:
			t.Fatalf("accepted %q of %d bytes, want 1 to %d", name, len(name), maxNameLen)
		case strings.ContainsAny(name, "/\x00\\ \t\n"):
			t.Fatalf("accepted %q with a separator, NUL or space", name)
		case name == "." || name == ".." || strings.HasPrefix(name, "."):
			t.Fatalf("accepted %q, a relative directory or hidden file", name)
		case filepath.Base(name) != name || filepath.Clean(name) != name:
			t.Fatalf("accepted %q, which is not one clean path element", name)
		case strings.HasPrefix(name, "-"):
			t.Fatalf("accepted %q, which commands would read as an option", name)
		}
	})
}

func TestParseLabels(t *testing.T) {
	tests := []struct {
		items []string
		want  map[string]string
	}{
		{nil, nil},
		{[]string{"a=b"}, map[string]string{"a": "b"}},
		{[]string{"a="}, map[string]string{"a": ""}},
		{[]string{"a=b=c"}, map[string]string{"a": "b=c"}}, // the first '=' splits
		{[]string{"a=1", "a=2"}, map[string]string{"a": "2"}},
		{[]string{"com.example.role=web server"}, map[string]string{"com.example.role": "web server"}},
		{[]string{"k=line1\nline2"}, map[string]string{"k": "line1\nline2"}}, // values are free text
		{[]string{"caf\u00e9=th\u00e9"}, map[string]string{"caf\u00e9": "th\u00e9"}},
		{[]string{strings.Repeat("k", 256) + "=" + strings.Repeat("v", 4096)}, map[string]string{strings.Repeat("k", 256): strings.Repeat("v", 4096)}},
	}
	for _, tt := range tests {
		got, err := ParseLabels(tt.items)
		if err != nil {
			t.Errorf("ParseLabels(%q): %v", tt.items, err)
			continue
		}
		if !maps.Equal(got, tt.want) {
			t.Errorf("ParseLabels(%q) = %q, want %q", tt.items, got, tt.want)
		}
	}
}

func TestParseLabelsRefuses(t *testing.T) {
	tests := []struct {
		items []string
		why   string
	}{
		{[]string{"novalue"}, "use key=value"},
		{[]string{"=v"}, "label key"},
		{[]string{strings.Repeat("k", 257) + "=v"}, "label key"},
		{[]string{"a\x00=v"}, "label key"},
		{[]string{"a\nb=v"}, "label key"},
		{[]string{"a\rb=v"}, "label key"},
		{[]string{"\x1b[2J=v"}, "label key"}, // a terminal escape would clear the screen of `ls`
		{[]string{"a\u2028b=v"}, "label key"},
		{[]string{"\xff=v"}, "label key"},
		{[]string{"k=a\x00b"}, "value"},
		{[]string{"k=\xff"}, "value"},
		{[]string{"k=" + strings.Repeat("v", 4097)}, "value"},
		{[]string{"ok=1", "bad"}, "use key=value"},
	}
	for _, tt := range tests {
		got, err := ParseLabels(tt.items)
		if err == nil {
			t.Errorf("ParseLabels(%q) = %q, want an error about the %s", tt.items, got, tt.why)
			continue
		}
		requireFixableInputError(t, tt.items, err)
		if !strings.Contains(err.Error(), tt.why) {
			t.Errorf("ParseLabels(%q): error %q does not mention %q", tt.items, err, tt.why)
		}
		if got != nil {
			t.Errorf("ParseLabels(%q) returned %q with its error", tt.items, got)
		}
	}
}

// FuzzParseLabels checks that accepted labels are exactly the items given, with keys
// that print as themselves and values that are text.
func FuzzParseLabels(f *testing.F) {
	f.Add("a=b", "c=d")
	f.Add("a=b=c", "a=")
	f.Add("novalue", "x=y")
	f.Add("\x1b=v", "k=\x00")
	f.Fuzz(func(t *testing.T, first, second string) {
		items := []string{first, second}
		labels, err := ParseLabels(items)
		if err != nil {
			requireFixableInputError(t, items, err)
			return
		}
		want := map[string]string{}
		for _, it := range items {
			k, v, _ := strings.Cut(it, "=")
			want[k] = v
		}
		if !maps.Equal(labels, want) {
			t.Fatalf("ParseLabels(%q) = %q, want %q", items, labels, want)
		}
		for k, v := range labels {
			if k == "" || len(k) > 256 || strings.Contains(k, "=") || !utf8.ValidString(k) ||
				strings.IndexFunc(k, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
				t.Fatalf("accepted label key %q", k)
			}
			if len(v) > 4096 || strings.Contains(v, "\x00") || !utf8.ValidString(v) {
				t.Fatalf("accepted value %q for label %q", v, k)
			}
		}
	})
}

func TestCheckHostname(t *testing.T) {
	tests := []struct {
		hostname string
		ok       bool
	}{
		{"web", true},
		{"web-1.example.com", true},
		{"123", true},
		{"A", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 32) + "." + strings.Repeat("b", 31), true}, // 64 bytes, the kernel's limit
		{strings.Repeat("a", 63) + ".b", false},                         // 65 bytes
		{strings.Repeat("a", 64), false},                                // a label of 64
		{strings.Repeat("a.", 32) + "a", false},
		{"", false},
		{".", false},
		{"web.", false},
		{".web", false},
		{"a..b", false},
		{"-web", false},
		{"web-", false},
		{"we_b", false},
		{"we b", false},
		{"web/x", false},
		{"web\x00", false},
		{"web\n", false},
		{"caf\u00e9", false},
	}
	for _, tt := range tests {
		err := checkHostname(tt.hostname)
		if tt.ok {
			if err != nil {
				t.Errorf("checkHostname(%q) = %v, want nil", tt.hostname, err)
			}
			continue
		}
		requireFixableInputError(t, tt.hostname, err)
	}
}

var rfc1123Label = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// FuzzCheckHostname checks accepted hostnames against RFC 1123 and the kernel's
// 64-byte limit, written independently of checkHostname.
func FuzzCheckHostname(f *testing.F) {
	for _, s := range []string{"web", "web-1.example.com", "-x", "a..b", "x.", strings.Repeat("a", 65), "a_b", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, hostname string) {
		err := checkHostname(hostname)
		if err != nil {
			requireFixableInputError(t, hostname, err)
			return
		}
		if hostname == "" || len(hostname) > 64 {
			t.Fatalf("accepted %q of %d bytes, want 1 to 64", hostname, len(hostname))
		}
		for _, label := range strings.Split(hostname, ".") {
			if !rfc1123Label.MatchString(label) {
				t.Fatalf("accepted %q, whose label %q is not RFC 1123", hostname, label)
			}
		}
	})
}
