package main

import (
	"encoding/json"
	"math"
	"slices"
	"time"
)

// value is a measurement; NaN (failed, or nothing to measure) is written as null
// in JSON, which has no NaN.
type value float64

func (v value) MarshalJSON() ([]byte, error) {
	f := float64(v)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// summary describes a series of durations in milliseconds.
type summary struct {
	Count int   `json:"count"`
	P50   value `json:"p50_ms"`
	P95   value `json:"p95_ms"`
	Max   value `json:"max_ms"`
	// FirstMedian and LastMedian are the medians of the first and last tenth of the
	// samples (at least one): the growth from the first container to the N-th, in
	// a form one slow sample (another process's burst) does not decide.
	FirstMedian value `json:"first_median_ms"`
	LastMedian  value `json:"last_median_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile interpolates linearly between the closest ranks of sorted.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	k := float64(len(sorted)-1) * q
	lo := int(k)
	hi := min(lo+1, len(sorted)-1)
	return sorted[lo] + (sorted[hi]-sorted[lo])*(k-float64(lo))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return percentile(s, 0.5)
}

func summarize(samples []float64) summary {
	if len(samples) == 0 {
		nan := value(math.NaN())
		return summary{P50: nan, P95: nan, Max: nan, FirstMedian: nan, LastMedian: nan}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	k := max(1, len(samples)/10)
	return summary{
		Count: len(samples), P50: value(percentile(s, 0.5)), P95: value(percentile(s, 0.95)), Max: value(s[len(s)-1]),
		FirstMedian: value(median(samples[:k])), LastMedian: value(median(samples[len(samples)-k:])),
	}
}
