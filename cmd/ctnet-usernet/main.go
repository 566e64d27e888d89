// Command ctnet-usernet is the user-mode network of one rootless ctnet container: the
// gVisor stack (package usernet) on the TAP device's host end that ctnet gives it,
// with the container's published ports, until ctnet closes its stdin. ctnet starts it
// from beside its own executable (package internal/usernetproc says how), so that
// commands that run no rootless container do not load the stack.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/ctnet/ctnet/internal/usernetproc"
	"github.com/ctnet/ctnet/usernet"
)

func main() {
	stdin := bufio.NewReader(os.Stdin)
	s, err := start(stdin)
	if err != nil {
		fmt.Printf("error: %s\n", oneLine(err))
		os.Exit(1)
	}
	fmt.Println("ok")
	// Until ctnet closes stdin, or exits: the network lives as long as its
	// supervisor.
	io.Copy(io.Discard, stdin)
	s.Close()
}

func start(stdin *bufio.Reader) (*usernet.Stack, error) {
	tap, inner := os.NewFile(usernetproc.TAPFD, "tap"), usernetproc.NewInner()
	line, err := stdin.ReadBytes('\n')
	if err != nil {
		tap.Close()
		return nil, fmt.Errorf("read the configuration: %w", err)
	}
	var cfg usernetproc.Config
	if err := json.Unmarshal(line, &cfg); err != nil {
		tap.Close()
		return nil, fmt.Errorf("read the configuration: %w", err)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	s, err := usernet.Start(usernet.Config{TAP: tap, MTU: cfg.MTU, Subnet: cfg.Subnet,
		AllowHostLoopback: cfg.AllowHostLoopback, Resolvers: cfg.Resolvers, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("start usernet: %w", err)
	}
	for _, p := range cfg.Ports {
		if err := s.Publish(p, inner.New); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// oneLine keeps the answer on the one line ctnet reads.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
