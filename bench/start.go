package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
)

// startResult is one program's time from exec to exit, against an empty Go
// program's: what every ctnet command pays before it does anything.
type startResult struct {
	Program string    `json:"program"`
	Samples []float64 `json:"samples_ms"`
	P10     value     `json:"p10_ms"`
	P50     value     `json:"p50_ms"`
	P90     value     `json:"p90_ms"`
	// Ratio is P50 over the empty Go program's.
	Ratio value `json:"ratio_to_empty_go"`
	// Size is the executable's size in bytes.
	Size int64 `json:"size_bytes"`
}

// startRuns is how many times each program is started (quick: a fifth).
const startRuns = 300

// emptyGoProgram is the reference: the least a static Go program costs.
const emptyGoProgram = "package main\n\nfunc main() {}\n"

// runStartSection starts an empty static Go program, /bin/true and `ctnet
// --version` in turn, startRuns times each, interleaved so that the machine's
// load weighs on all three alike, and reports each one's exec-to-exit time.
func runStartSection(ctx context.Context, env *benchEnv, res *results) error {
	empty, err := buildEmptyGo(ctx, env.tmp)
	if err != nil {
		return err
	}
	programs := []struct {
		name string
		argv []string
	}{
		{"empty Go program (static)", []string{empty}},
		{"/bin/true", []string{"/bin/true"}},
		{"ctnet --version", []string{env.ctnet, "--version"}},
	}
	runs := startRuns
	if env.cfg.Mode == "quick" {
		runs /= 5
	}
	samples := make([][]float64, len(programs))
	for range runs {
		for i, p := range programs {
			if err := ctx.Err(); err != nil {
				return err
			}
			cmd := exec.Command(p.argv[0], p.argv[1:]...)
			t0 := time.Now()
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			samples[i] = append(samples[i], ms(time.Since(t0)))
		}
	}
	for i, p := range programs {
		s := slices.Clone(samples[i])
		slices.Sort(s)
		r := startResult{Program: p.name, Samples: samples[i], P10: value(percentile(s, 0.1)),
			P50: value(percentile(s, 0.5)), P90: value(percentile(s, 0.9))}
		r.Ratio = r.P50 / res.startReference(r.P50)
		if st, err := os.Stat(p.argv[0]); err == nil {
			r.Size = st.Size()
		}
		res.Start = append(res.Start, r)
		fmt.Fprintf(os.Stderr, "   %-26s p50 %6.3f ms  p10 %6.3f  p90 %6.3f  %5.2f× empty Go  %5.1f MB\n",
			r.Program, r.P50, r.P10, r.P90, r.Ratio, float64(r.Size)/1e6)
	}
	return nil
}

// startReference is the empty Go program's median, the first measured; for that
// one, its own.
func (r *results) startReference(own value) value {
	if len(r.Start) == 0 {
		return own
	}
	return r.Start[0].P50
}

// buildEmptyGo builds emptyGoProgram as the README builds ctnet: static.
func buildEmptyGo(ctx context.Context, dir string) (string, error) {
	src := filepath.Join(dir, "emptygo")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(emptyGoProgram), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module emptygo\n"), 0o644); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "emptygo.bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the empty Go program: %v: %s", err, out)
	}
	return path, nil
}
