package main

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writeCharts draws the PNG charts of whatever the run measured. gonum/plot panics
// on data it cannot draw; that becomes an error, the results being written already.
func writeCharts(dir string, r *results) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("draw charts: %v", p)
		}
	}()
	var errs []error
	var ns []int
	for _, s := range r.Setup {
		if !slices.Contains(ns, s.N) {
			ns = append(ns, s.N)
		}
	}
	if len(ns) > 1 { // a line needs two values of N on the log scale
		errs = append(errs, latencyChart(filepath.Join(dir, "setup_latency.png"), r.Setup))
	}
	if len(r.Concurrency) > 0 {
		errs = append(errs, concurrencyChart(filepath.Join(dir, "concurrency.png"), r.Concurrency))
	}
	if len(r.DataPath) > 0 {
		errs = append(errs, pathChart(filepath.Join(dir, "datapath.png"), "Data path: one TCP stream", r.DataPath))
	}
	if len(r.Rootless) > 0 {
		errs = append(errs, pathChart(filepath.Join(dir, "rootless.png"), "Rootless: one TCP stream", r.Rootless))
	}
	if len(r.Rules.Steps) > 0 {
		errs = append(errs, rulesChart(filepath.Join(dir, "rules.png"), r.Rules.Steps))
	}
	return errors.Join(errs...)
}

func finite(v value) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) && v > 0 }

// latencyChart plots setup+teardown p50 per container against N, both log scale.
func latencyChart(path string, rows []setupResult) error {
	p := plot.New()
	p.Title.Text = "Setup + teardown per container (p50), one after another"
	p.X.Label.Text = "containers on the network (N)"
	p.Y.Label.Text = "ms per container"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	var tools []string
	for _, s := range rows {
		if !slices.Contains(tools, s.Tool) {
			tools = append(tools, s.Tool)
		}
	}
	var lines []any
	for _, tool := range tools {
		var xys plotter.XYs
		for _, s := range rows {
			if s.Tool == tool && finite(s.Total.P50) {
				xys = append(xys, plotter.XY{X: float64(s.N), Y: float64(s.Total.P50)})
			}
		}
		if len(xys) > 0 {
			lines = append(lines, tool, xys)
		}
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return err
	}
	return p.Save(9*vg.Inch, 6*vg.Inch, path)
}

// concurrencyChart shows setup throughput per tool, one bar group per client count.
func concurrencyChart(path string, rows []setupResult) error {
	var tools []string
	var clients []int
	for _, s := range rows {
		if !slices.Contains(tools, s.Tool) {
			tools = append(tools, s.Tool)
		}
		if !slices.Contains(clients, s.Clients) {
			clients = append(clients, s.Clients)
		}
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Setup throughput with parallel clients (N=%d)", rows[0].N)
	p.Y.Label.Text = "containers/s"
	p.Legend.Top = true
	width := vg.Points(60 / float64(len(clients)))
	for k, c := range clients {
		values := make(plotter.Values, len(tools))
		for t, tool := range tools {
			for _, s := range rows {
				if s.Tool == tool && s.Clients == c && finite(s.SetupPerSecond) {
					values[t] = float64(s.SetupPerSecond)
				}
			}
		}
		bars, err := plotter.NewBarChart(values, width)
		if err != nil {
			return err
		}
		bars.Color = plotutil.Color(k)
		bars.Offset = width * vg.Length(float64(k)-float64(len(clients)-1)/2)
		p.Add(bars)
		p.Legend.Add(fmt.Sprintf("%d clients", c), bars)
	}
	p.NominalX(tools...)
	return p.Save(10*vg.Inch, 5*vg.Inch, path)
}

// pathChart shows throughput per path as horizontal bars, one colour per tool.
func pathChart(path, title string, rows []pathResult) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "Gbit/s"
	labels := make([]string, len(rows))
	var tools []string
	for k, r := range rows {
		labels[k] = r.Tool + ": " + r.Path
		if !slices.Contains(tools, r.Tool) {
			tools = append(tools, r.Tool)
		}
	}
	for t, tool := range tools {
		values := make(plotter.Values, len(rows))
		for k, r := range rows {
			if r.Tool == tool && finite(r.Gbps) {
				values[k] = float64(r.Gbps)
			}
		}
		bars, err := plotter.NewBarChart(values, vg.Points(14))
		if err != nil {
			return err
		}
		bars.Horizontal = true
		bars.Color = plotutil.Color(t)
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.Legend.Add(tool, bars)
	}
	p.NominalY(labels...)
	p.Legend.Top = true
	return p.Save(11*vg.Inch, vg.Length(1.5+0.3*float64(len(rows)))*vg.Inch, path)
}

// rulesChart plots the time to publish one more port against the ports already
// published.
func rulesChart(path string, steps []ruleStep) error {
	p := plot.New()
	p.Title.Text = "Publishing one more port with k already published"
	p.X.Label.Text = "ports already published (k)"
	p.Y.Label.Text = "ms"
	p.Legend.Top = true
	var lines []any
	for _, tool := range []string{"ctnet", "article script"} {
		var one, batch plotter.XYs
		for _, s := range steps {
			if s.Tool != tool {
				continue
			}
			one = append(one, plotter.XY{X: float64(s.K), Y: s.ProbeMs})
			if finite(s.BatchPerPortMs) {
				batch = append(batch, plotter.XY{X: float64(s.K), Y: float64(s.BatchPerPortMs)})
			}
		}
		lines = append(lines, tool+": publish one more port (probe)", one, tool+": per port in a batch", batch)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return err
	}
	return p.Save(9*vg.Inch, 6*vg.Inch, path)
}
