// Package bandwidth names a container interface's rate limits once, for the store
// that records them, the orchestrator that applies them and the front ends that read
// them: the CLI's --ingress-rate and --egress-rate, CNI's bandwidth capability.
package bandwidth

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Limits are an interface's rates and bursts as the container sees them, as CNI's
// bandwidth plugin names them: ingress is traffic into the container, egress traffic
// out of it. Rates are in bits per second, bursts in bits; a zero rate is no limit,
// a zero burst the default for its rate (DefaultBurst). The JSON names are the
// store's, and the CLI's inspect output.
type Limits struct {
	IngressRate  uint64 `json:"ingress_rate,omitempty"`
	IngressBurst uint64 `json:"ingress_burst,omitempty"`
	EgressRate   uint64 `json:"egress_rate,omitempty"`
	EgressBurst  uint64 `json:"egress_burst,omitempty"`
}

// IsZero reports whether the limits limit nothing.
func (l Limits) IsZero() bool { return l == Limits{} }

// Bounds of a rate: below a kilobit a token bucket holds less than one packet per
// several seconds, and above 100 Gbit/s it is no limit on a host's veth.
const (
	MinRate = 1_000
	MaxRate = 100_000_000_000
)

// units are the suffixes a rate takes, in bits per second: Kubernetes' SI suffixes
// (k, M, G: its kubernetes.io/ingress-bandwidth annotations) and tc's (kbit, mbit,
// gbit). Byte units (tc's kbps, MB) are not taken: a rate here is always bits.
var units = map[string]uint64{
	"": 1, "bit": 1,
	"k": 1e3, "K": 1e3, "kbit": 1e3,
	"M": 1e6, "mbit": 1e6,
	"G": 1e9, "gbit": 1e9,
}

// Grammar is ParseRate's grammar, for messages and help text.
const Grammar = "bits per second: a number with an optional k, M or G (Kubernetes' 10M) or kbit, mbit, gbit (tc's 10mbit)"

// ParseRate reads a rate in bits per second: a decimal number, whole or with a
// fraction, and a unit of units (tc's are taken in any case, as tc takes them); it
// must lie within MinRate and MaxRate.
func ParseRate(s string) (uint64, error) {
	end := strings.IndexFunc(s, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	if end < 0 {
		end = len(s)
	}
	number, unit := s[:end], s[end:]
	if lower := strings.ToLower(unit); strings.HasSuffix(lower, "bit") {
		unit = lower
	}
	scale, ok := units[unit]
	if number == "" || !ok {
		if unit == "m" {
			return 0, fmt.Errorf("m is Kubernetes' milli: write M or mbit for megabits; use %s", Grammar)
		}
		return 0, fmt.Errorf("use %s", Grammar)
	}
	f, err := strconv.ParseFloat(number, 64)
	if err != nil {
		return 0, fmt.Errorf("use %s", Grammar)
	}
	bits := f * float64(scale)
	if bits < MinRate || bits > MaxRate {
		return 0, fmt.Errorf("use a rate from 1k to 100G bits per second")
	}
	return uint64(bits), nil
}

// FormatRate writes a rate in the largest of tc's units it reaches: 20mbit,
// 1.5mbit, 999bit.
func FormatRate(bits uint64) string {
	for _, u := range []struct {
		name  string
		scale uint64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if bits >= u.scale {
			return strconv.FormatFloat(float64(bits)/float64(u.scale), 'f', -1, 64) + u.name
		}
	}
	return strconv.FormatUint(bits, 10) + "bit"
}

// DefaultBurst is the burst of a rate given without one: 50 ms at the rate, and at
// least 128 kbit (16 KiB, eleven full-size frames). A bucket refills only when the
// kernel's timer wakes the queue: one that holds less than a late wake-up's worth
// (a busy host's timers run late by milliseconds) loses those tokens, and the flow
// falls short of its rate.
func DefaultBurst(rate uint64) uint64 { return max(rate/20, 128_000) }

// Bounds of a burst: below a full frame nothing passes, and 4 GiB is the most a
// token bucket's limit holds (CNI's bandwidth plugin's bound too; containerd asks
// for 2^32-1 bits to mean no burst limit).
const (
	MinBurst = 8 * 1514
	MaxBurst = 8 << 32
)

// ErrBurstWithoutRate is a burst given for a direction without a rate.
var ErrBurstWithoutRate = errors.New("a burst must be given with a rate in the same direction")

// Check says what is wrong with limits: a rate out of bounds, or a burst without a
// rate. field names the offending one as Limits does ("IngressRate", ...).
func (l Limits) Check() (field string, err error) {
	for _, d := range []struct {
		rate, burst         uint64
		rateName, burstName string
	}{{l.IngressRate, l.IngressBurst, "IngressRate", "IngressBurst"}, {l.EgressRate, l.EgressBurst, "EgressRate", "EgressBurst"}} {
		switch {
		case d.rate == 0 && d.burst != 0:
			return d.burstName, ErrBurstWithoutRate
		case d.rate != 0 && (d.rate < MinRate || d.rate > MaxRate):
			return d.rateName, fmt.Errorf("use a rate from 1k to 100G bits per second")
		case d.burst != 0 && (d.burst < MinBurst || d.burst > MaxBurst):
			return d.burstName, fmt.Errorf("use a burst from one full frame (12112 bits) to 4 GiB (34359738368 bits)")
		}
	}
	return "", nil
}
