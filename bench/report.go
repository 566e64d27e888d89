package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// results is everything one run measured; it is written as results.json.
type results struct {
	Command string    `json:"command"`
	Config  config    `json:"config"`
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end: other
	// work on the machine shows there, and in every absolute number.
	LoadBefore  string        `json:"loadavg_before"`
	LoadAfter   string        `json:"loadavg_after"`
	Machine     machine       `json:"machine"`
	Start       []startResult `json:"start,omitempty"`
	Setup       []setupResult `json:"setup"`
	Concurrency []setupResult `json:"concurrency"`
	DataPath    []pathResult  `json:"datapath"`
	Rules       rulesResult   `json:"rules"`
	Rootless    []pathResult  `json:"rootless"`
	IPv6        ipv6Result    `json:"ipv6"`
	Notes       []string      `json:"notes,omitempty"`
	Errors      []string      `json:"errors,omitempty"`
}

// machine is what the absolute numbers depend on.
type machine struct {
	CPUs     int               `json:"cpus"`
	CPU      string            `json:"cpu"`
	MemoryKB int               `json:"memory_kib"`
	Kernel   string            `json:"kernel"`
	OS       string            `json:"os"`
	Go       string            `json:"go"`
	Packages map[string]string `json:"packages"`
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Packages: map[string]string{}}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		fmt.Sscanf(string(b), "MemTotal: %d kB", &m.MemoryKB)
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		m.OS = "Debian " + strings.TrimSpace(string(b))
	}
	for _, p := range requiredPackages {
		if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", p[0]).Output(); err == nil {
			m.Packages[p[0]] = string(out)
		}
	}
	return m
}

func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// num formats a measurement, "—" when there is none.
func num(format string, v value) string {
	if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		return "—"
	}
	return fmt.Sprintf(format, float64(v))
}

// table is one block of the report, rendered for the terminal or as Markdown.
type table struct {
	title  string
	header []string
	rows   [][]string
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) text(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n", t.title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t")+"\t")
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
}

func (t *table) markdown(w io.Writer) {
	fmt.Fprintf(w, "\n#### %s\n\n| %s |\n|%s\n", t.title, strings.Join(t.header, " | "), strings.Repeat("---|", len(t.header)))
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
}

// tables lays out everything measured.
func tables(r *results) []*table {
	var out []*table
	if len(r.Start) > 0 {
		t := &table{title: "Start: exec to exit (ms)", header: []string{"program", "p10", "p50", "p90", "p50 vs empty Go", "size MB"}}
		for _, s := range r.Start {
			t.row(s.Program, num("%.3f", s.P10), num("%.3f", s.P50), num("%.3f", s.P90), num("%.2f", s.Ratio), fmt.Sprintf("%.1f", float64(s.Size)/1e6))
		}
		out = append(out, t)
	}
	if len(r.Setup) > 0 {
		out = append(out, setupTable("Setup and teardown per container, one after another (ms)", r.Setup))
	}
	if len(r.Concurrency) > 0 {
		t := &table{title: "With parallel clients (containers/s; latency per container in ms)",
			header: []string{"tool", "N", "clients", "setup/s", "teardown/s", "setup p50", "setup p95", "teardown p50", "failures", "check"}}
		for _, s := range r.Concurrency {
			t.row(s.Tool, fmt.Sprint(s.N), fmt.Sprint(s.Clients), num("%.1f", s.SetupPerSecond), num("%.1f", s.TeardownPerSecond),
				num("%.2f", s.Setup.P50), num("%.2f", s.Setup.P95), num("%.2f", s.Teardown.P50), fmt.Sprint(s.Failures), shortCheck(s.Check))
		}
		out = append(out, t)
	}
	if mem := memoryRows(r.Setup); len(mem) > 0 {
		t := &table{title: "Supervisors `ctnet run -d` leaves running (smaps_rollup)",
			header: []string{"containers", "processes", "RSS MiB", "PSS MiB", "RSS/container MiB", "PSS/container MiB", "private/container MiB"}}
		for _, s := range mem {
			m := s.Memory
			t.row(fmt.Sprint(s.N), fmt.Sprint(m.Processes), fmt.Sprintf("%.1f", float64(m.RSSKiB)/1024),
				fmt.Sprintf("%.1f", float64(m.PSSKiB)/1024), fmt.Sprintf("%.2f", m.RSSPerKiB/1024),
				fmt.Sprintf("%.2f", m.PSSPerKiB/1024), fmt.Sprintf("%.2f", m.PrivatePerKiB/1024))
		}
		out = append(out, t)
	}
	if len(r.DataPath) > 0 {
		out = append(out, pathTable("Data path (one iperf3 TCP stream; 1-byte ping-pong round trip)", r.DataPath))
	}
	if len(r.Rules.Steps) > 0 {
		t := &table{title: "Publishing with k ports already published",
			header: []string{"tool", "k", "probe ms", "one more port ms", "batch ms/port", "rules", "rules traversed to DNAT"}}
		for _, s := range r.Rules.Steps {
			t.row(s.Tool, fmt.Sprint(s.K), fmt.Sprintf("%.2f", s.ProbeMs), fmt.Sprintf("%.2f", s.OnePortMs),
				num("%.3f", s.BatchPerPortMs), fmt.Sprint(s.Rules), fmt.Sprint(s.Traversed))
		}
		out = append(out, t)
	}
	if len(r.Rootless) > 0 {
		out = append(out, pathTable("Rootless (one iperf3 TCP stream; 1-byte ping-pong round trip)", r.Rootless))
	}
	if len(r.IPv6.Setup) > 0 {
		out = append(out, setupTable("IPv6 next to IPv4: setup and teardown per container, one after another (ms)", r.IPv6.Setup))
	}
	if len(r.IPv6.DataPath) > 0 {
		out = append(out, pathTable("IPv6 next to IPv4: data path (one iperf3 TCP stream; 1-byte ping-pong round trip)", r.IPv6.DataPath))
	}
	return out
}

func setupTable(title string, rows []setupResult) *table {
	t := &table{title: title,
		header: []string{"tool", "N", "setup p50", "p95", "max", "teardown p50", "p95", "max", "sum p50", "N-th/first", "failures", "check"}}
	for _, s := range rows {
		growth := "—"
		if s.Cycles == 0 && s.N > 1 {
			growth = num("%.2f", s.SetupGrowth)
		}
		t.row(s.Tool, fmt.Sprint(s.N), num("%.2f", s.Setup.P50), num("%.2f", s.Setup.P95), num("%.2f", s.Setup.Max),
			num("%.2f", s.Teardown.P50), num("%.2f", s.Teardown.P95), num("%.2f", s.Teardown.Max),
			num("%.2f", s.Total.P50), growth, fmt.Sprint(s.Failures), shortCheck(s.Check))
	}
	return t
}

func shortCheck(check string) string {
	if strings.HasPrefix(check, "fail") {
		return "FAIL"
	}
	return check
}

func pathTable(title string, rows []pathResult) *table {
	t := &table{title: title, header: []string{"tool", "path", "Gbit/s", "RTT p50 µs", "vs", "throughput ratio", "RTT ratio"}}
	for _, p := range rows {
		vs, ratio, rtt := "", "", ""
		if p.Reference != "" {
			vs = strings.TrimSpace(p.RefTool + " " + p.Reference)
			ratio, rtt = num("%.2f", p.GbpsRatio), num("%.2f", p.RTTRatio)
		}
		t.row(p.Tool, p.Path, num("%.2f", p.Gbps), num("%.1f", p.RTTus), vs, ratio, rtt)
	}
	return t
}

func printTables(w io.Writer, r *results) {
	fmt.Fprintf(w, "\nctnet benchmarks — %s mode, %d CPUs, kernel %s, load average %s before, %s after.\n"+
		"Ratios are the claim; absolute numbers depend on the machine.\n",
		r.Config.Mode, r.Machine.CPUs, r.Machine.Kernel, r.LoadBefore, r.LoadAfter)
	for _, t := range tables(r) {
		t.text(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}

// writeMarkdown writes the tables as Markdown, for BENCHMARKS.md.
func writeMarkdown(path string, r *results) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s with `%s` in %.0f s on %d CPUs (%s), %d GiB, kernel %s, %s, %s.\n",
		r.Started.Format("2006-01-02"), r.Command, r.Seconds, r.Machine.CPUs, r.Machine.CPU, r.Machine.MemoryKB>>20,
		r.Machine.Kernel, r.Machine.OS, r.Machine.Go)
	var pkgs []string
	for _, p := range requiredPackages {
		if v, ok := r.Machine.Packages[p[0]]; ok {
			pkgs = append(pkgs, p[0]+" "+v)
		}
	}
	fmt.Fprintf(&b, "Packages: %s.\n", strings.Join(pkgs, ", "))
	fmt.Fprintf(&b, "Load average (1, 5, 15 min) before: %s; after: %s.\n", r.LoadBefore, r.LoadAfter)
	for _, t := range tables(r) {
		t.markdown(&b)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\nNote: %s\n", n)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "\nError: %s\n", e)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func memoryRows(rows []setupResult) []setupResult {
	var out []setupResult
	for _, s := range rows {
		if s.Memory != nil {
			out = append(out, s)
		}
	}
	return out
}
