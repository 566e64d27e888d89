package bandwidth

import (
	"testing"

	"github.com/ctnet/ctnet/internal/fixhint"
)

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
	}{
		{"10mbit", 10e6}, {"10Mbit", 10e6}, {"10M", 10e6}, {"1M", 1e6}, {"500k", 500e3}, {"500K", 500e3},
		{"500kbit", 500e3}, {"1G", 1e9}, {"1gbit", 1e9}, {"2.5M", 2.5e6}, {"20000000", 20e6}, {"1000bit", 1000},
		{"1k", MinRate}, {"100G", MaxRate},
	} {
		got, err := ParseRate(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "fast", "10MB", "10kbps", "10m", "M", "1.2.3M", "-5M", "0", "999", "101G", "10 M", "1e6"} {
		got, err := ParseRate(bad)
		if err == nil {
			t.Errorf("ParseRate(%q) = %d, want an error", bad, got)
			continue
		}
		fixhint.Require(t, bad, err)
	}
}

func TestFormatRate(t *testing.T) {
	for rate, want := range map[uint64]string{20e6: "20mbit", 1500e3: "1.5mbit", 2.5e9: "2.5gbit", 1e3: "1kbit", 12345: "12.345kbit", 999: "999bit"} {
		if got := FormatRate(rate); got != want {
			t.Errorf("FormatRate(%d) = %q, want %q", rate, got, want)
		}
		if back, err := ParseRate(want); rate >= MinRate && (err != nil || back != rate) {
			t.Errorf("ParseRate(FormatRate(%d)) = %d, %v", rate, back, err)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		l     Limits
		field string
	}{
		{Limits{}, ""},
		{Limits{IngressRate: 20e6, EgressRate: 10e6, EgressBurst: 1 << 20}, ""},
		{Limits{EgressRate: 10e6, EgressBurst: 1<<32 - 1}, ""}, // containerd's "no burst limit"
		{Limits{IngressBurst: 1 << 20}, "IngressBurst"},
		{Limits{EgressRate: 1}, "EgressRate"},
		{Limits{IngressRate: 10e6, IngressBurst: 100}, "IngressBurst"},
		{Limits{IngressRate: 10e6, IngressBurst: MaxBurst + 1}, "IngressBurst"},
	} {
		field, err := c.l.Check()
		if field != c.field {
			t.Errorf("%+v: Check says %q (%v), want %q", c.l, field, err, c.field)
		}
		if err != nil {
			fixhint.Require(t, c.l, err)
		}
	}
}
