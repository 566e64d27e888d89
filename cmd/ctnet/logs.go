package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/network"
)

// followPoll is how often logs -f looks for more output. Polling a file the
// supervisor appends to is simpler than inotify and costs nothing at this rate.
const followPoll = 100 * time.Millisecond

type logsOptions struct {
	follow, timestamps bool
	tail, since        string
}

func (a *app) logsCommand() *cobra.Command {
	var o logsOptions
	cmd := &cobra.Command{
		Use:   "logs [-f] [-t] [--tail N] [--since WHEN] NAME",
		Short: "Print what a container started with -d wrote to stdout and stderr",
		Long: `Print the output of a detached container's command, kept until "ctnet rm": what it
wrote to stdout on stdout, what it wrote to stderr on stderr. With -f, keep printing as
it writes until the container exits.`,
		Example: `  ctnet logs -f web
  ctnet logs --tail 20 -t web
  ctnet logs --since 10m web 2>/dev/null`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tail, err := parseTail(o.tail)
			if err != nil {
				return err
			}
			since, err := parseSince(o.since, time.Now())
			if err != nil {
				return err
			}
			return a.withManager(func(m *network.Manager) error {
				c, err := m.Container(args[0])
				if err != nil {
					return err
				}
				if !c.Detach {
					return fmt.Errorf("container %s was not started with -d: its output went to the terminal that ran it", c.Name)
				}
				log, err := network.OpenLog(c)
				if err != nil {
					return fmt.Errorf("read the log of %s: %w", c.Name, err)
				}
				if log == nil {
					return nil // the supervisor has not started the command yet
				}
				defer log.Close()
				// The supervisor writes the log, its last line after the container exits.
				writing := func() bool { return o.follow && c.Supervisor.Alive() }
				return a.copyLog(log, writing, tail, since, o.timestamps)
			})
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&o.follow, "follow", "f", false, "keep printing until the container exits")
	fl.BoolVarP(&o.timestamps, "timestamps", "t", false, "put the time each line was written before it")
	fl.StringVarP(&o.tail, "tail", "n", "all", "print only the last N lines (all: every line)")
	fl.StringVar(&o.since, "since", "", "print only lines written since a time (2026-12-03T10:00:00Z, a Unix time) or for a duration (10m, 1h30m)")
	return cmd
}

// parseTail is --tail: a number of lines, or -1 for "all".
func parseTail(s string) (int, error) {
	if s == "all" || s == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, usage("bad --tail %q: use a number of lines or all", s)
	}
	return n, nil
}

// parseSince is Docker's --since: a duration before now, an RFC 3339 time (with or
// without the zone, then UTC), or a Unix time in seconds.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Unix(0, int64(secs*float64(time.Second))), nil
	}
	return time.Time{}, usage("bad --since %q: use a duration (10m), an RFC 3339 time or a Unix time", s)
}

// copyLog prints the log's entries, stdout's to stdout and stderr's to stderr: those
// since since, the last tail of them (tail < 0: all), and then, while writing says
// someone may still write, what is appended.
func (a *app) copyLog(log *network.LogReader, writing func() bool, tail int, since time.Time, timestamps bool) error {
	print := func(e network.LogEntry) error {
		w := a.stdout
		if e.Stream == "stderr" {
			w = a.stderr
		}
		text := e.Log
		if timestamps && !e.Time.IsZero() {
			text = e.Time.UTC().Format(time.RFC3339Nano) + " " + text
		}
		_, err := io.WriteString(w, text)
		return err
	}
	wanted := func(e network.LogEntry) bool { return since.IsZero() || !e.Time.Before(since) }
	printWanted := func(e network.LogEntry) error {
		if !wanted(e) {
			return nil
		}
		return print(e)
	}
	// What is there already, of which only the last tail entries are printed.
	var kept []network.LogEntry
	for {
		e, err := log.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if !wanted(e) {
			continue
		}
		if tail < 0 {
			if err := print(e); err != nil {
				return err
			}
			continue
		}
		if kept = append(kept, e); len(kept) > tail {
			kept = kept[1:]
		}
	}
	for _, e := range kept {
		if err := print(e); err != nil {
			return err
		}
	}
	for {
		e, err := log.Next()
		switch {
		case err == nil:
			if err := printWanted(e); err != nil {
				return err
			}
			continue
		case !errors.Is(err, io.EOF):
			return err
		}
		if !writing() {
			return drain(log, printWanted)
		}
		time.Sleep(followPoll)
	}
}

// drain prints what is left once nobody writes any more.
func drain(log *network.LogReader, print func(network.LogEntry) error) error {
	for {
		e, err := log.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := print(e); err != nil {
			return err
		}
	}
}
