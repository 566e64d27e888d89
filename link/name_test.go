package link

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/fixhint"
)

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"ctnet0", true},
		{"ct-0123456789a", true},
		{"vc01234567-1", true},
		{"eth0.100", true},
		{"br_x", true},
		{"a", true},
		{strings.Repeat("a", 15), true},
		{strings.Repeat("a", 16), false}, // IFNAMSIZ is 16 with the NUL
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"a:b", false}, // the kernel refuses ':' (old alias syntax)
		{"a b", false},
		{"a\tb", false},
		{"a\x00", false},
		{"a\n", false},
		{"br%d", false}, // the kernel would replace %d with a number
		{"a\"b", false},
		{"caf\u00e9", false},
		{"\xff", false},
	}
	for _, tt := range tests {
		err := CheckName(tt.name)
		if tt.ok {
			if err != nil {
				t.Errorf("CheckName(%q) = %v, want nil", tt.name, err)
			}
			continue
		}
		fixhint.Require(t, tt.name, err)
		if !strings.Contains(err.Error(), "interface name") {
			t.Errorf("CheckName(%q): error %q does not say it is about an interface name", tt.name, err)
		}
	}
}

// FuzzCheckName checks that an accepted interface name is one the kernel takes as it
// is (dev_valid_name, and no '%' template) and that is one safe path element under
// /proc/sys/net/ipv4/conf/.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"ctnet0", "ct-0123456789ab", "..", "a/b", "a:b", "br%d", strings.Repeat("x", 16), "eth0\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := CheckName(name)
		if err != nil {
			fixhint.Require(t, name, err)
			return
		}
		switch {
		case name == "" || len(name) > MaxNameLen:
			t.Fatalf("accepted %q of %d bytes, want 1 to %d", name, len(name), MaxNameLen)
		case name == "." || name == "..":
			t.Fatalf("accepted %q", name)
		case strings.ContainsAny(name, "/:% \t\n\v\f\r\x00"):
			t.Fatalf("accepted %q, which the kernel refuses or rewrites", name)
		case filepath.Base(name) != name:
			t.Fatalf("accepted %q, which is not one path element", name)
		}
		for _, r := range name {
			if r < 0x21 || r > 0x7e {
				t.Fatalf("accepted %q with %q, which is not printable ASCII", name, r)
			}
		}
	})
}
