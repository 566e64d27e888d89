package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/network"
)

// followPoll is how often logs -f looks for more output. Polling a file the
// supervisor appends to is simpler than inotify and costs nothing at this rate.
const followPoll = 100 * time.Millisecond

func (a *app) logsCommand() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] NAME",
		Short: "Print what a container started with -d wrote to stdout and stderr",
		Long: `Print the output of a detached container's command, kept until "ctnet rm". With -f,
keep printing as it writes until the container exits.`,
		Example: "  ctnet logs -f web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withManager(func(m *network.Manager) error {
				c, err := m.Container(args[0])
				if err != nil {
					return err
				}
				if !c.Detach {
					return fmt.Errorf("container %s was not started with -d: its output went to the terminal that ran it", c.Name)
				}
				f, err := os.Open(network.LogPath(c))
				if errors.Is(err, fs.ErrNotExist) {
					return nil // the supervisor has not started the command yet
				}
				if err != nil {
					return fmt.Errorf("read the log of %s: %w", c.Name, err)
				}
				defer f.Close()
				// The supervisor writes the log, its last line after the container exits.
				writing := func() bool { return follow && c.Supervisor.Alive() }
				return copyLog(a.stdout, f, writing)
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the container exits")
	return cmd
}

// copyLog copies the log to w, and goes on copying what is appended while writing
// says someone may still write; once nobody does, it copies what is left and stops.
func copyLog(w io.Writer, log io.Reader, writing func() bool) error {
	for {
		n, err := io.Copy(w, log)
		if err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		if !writing() {
			_, err := io.Copy(w, log)
			return err
		}
		time.Sleep(followPoll)
	}
}
