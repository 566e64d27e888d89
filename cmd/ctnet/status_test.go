package main

import (
	"testing"
	"time"

	"github.com/ctnet/ctnet/network"
)

// The STATUS column reads as Docker's, singular and "About" included.
func TestStatusWording(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	running := func(age time.Duration) *network.Container {
		return &network.Container{State: network.StateRunning, Created: now.Add(-age)}
	}
	exited := func(code int, ago time.Duration) *network.Container {
		return &network.Container{State: network.StateExited, ExitCode: code, Finished: now.Add(-ago)}
	}
	cases := []struct {
		c    *network.Container
		want string
	}{
		{running(300 * time.Millisecond), "Up Less than a second"},
		{running(time.Second), "Up 1 second"},
		{running(1500 * time.Millisecond), "Up 1 second"},
		{running(2 * time.Second), "Up 2 seconds"},
		{running(59 * time.Second), "Up 59 seconds"},
		{running(time.Minute), "Up About a minute"},
		{running(119 * time.Second), "Up About a minute"},
		{running(2 * time.Minute), "Up 2 minutes"},
		{running(59 * time.Minute), "Up 59 minutes"},
		{running(time.Hour), "Up About an hour"},
		{running(2 * time.Hour), "Up 2 hours"},
		{running(47 * time.Hour), "Up 47 hours"},
		{running(3 * 24 * time.Hour), "Up 3 days"},
		{running(15 * 24 * time.Hour), "Up 2 weeks"},
		{running(90 * 24 * time.Hour), "Up 3 months"},
		{running(800 * 24 * time.Hour), "Up 2 years"},
		{exited(0, 3*time.Minute), "Exited (0) 3 minutes ago"},
		{exited(137, time.Second), "Exited (137) 1 second ago"},
		{exited(-1, time.Hour), "Exited (?) About an hour ago"},
		{&network.Container{State: network.StateExited, ExitCode: 7}, "Exited (7)"},
		{&network.Container{State: network.StateCreated}, "Created"},
		{&network.Container{State: network.StateRunning, Attached: true, Created: now.Add(-time.Minute)}, "Attached About a minute"},
	}
	for _, c := range cases {
		if got := statusAt(c.c, now); got != c.want {
			t.Errorf("status of %s %v (created %v, finished %v) = %q, want %q", c.c.State, c.c.ExitCode, now.Sub(c.c.Created), now.Sub(c.c.Finished), got, c.want)
		}
	}
}
