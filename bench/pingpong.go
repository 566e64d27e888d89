package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"time"
)

// The round-trip workload: one TCP connection, a 1-byte message answered by a
// 1-byte reply, repeated. The client is a separate process (this binary with
// pingPongClientArg) started inside the source namespace, so that the same client
// serves root paths and user namespaces alike; the server is either in this process
// (a listener opened inside the target namespace) or a process with
// pingPongServerArg.
const (
	pingPongClientArg = "__ctnet_bench_pingpong_client"
	pingPongServerArg = "__ctnet_bench_pingpong_server"
)

// pingPongResult is what the client prints.
type pingPongResult struct {
	Rounds int     `json:"rounds"`
	P50us  float64 `json:"p50_us"`
	P95us  float64 `json:"p95_us"`
}

// servePingPong answers every byte with the same byte on each connection of ln
// until ln is closed.
func servePingPong(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 1)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

// pingPongServerMain serves on os.Args[2] until killed.
func pingPongServerMain() int {
	ln, err := net.Listen(tcpNetwork(os.Args[2]), os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	servePingPong(ln)
	return 0
}

// pingPongClientMain connects to os.Args[2], does os.Args[3] rounds after a warm-up
// and prints a pingPongResult.
func pingPongClientMain() int {
	rounds, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := pingPong(os.Args[2], rounds)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

func pingPong(addr string, rounds int) (pingPongResult, error) {
	c, err := net.DialTimeout(tcpNetwork(addr), addr, 5*time.Second)
	if err != nil {
		return pingPongResult{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	buf := []byte{'x'}
	warmUp := rounds / 10
	samples := make([]float64, 0, rounds)
	for i := 0; i < warmUp+rounds; i++ {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return pingPongResult{}, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return pingPongResult{}, err
		}
		if i >= warmUp {
			samples = append(samples, float64(time.Since(start))/float64(time.Microsecond))
		}
	}
	slices.Sort(samples)
	return pingPongResult{Rounds: rounds, P50us: percentile(samples, 0.5), P95us: percentile(samples, 0.95)}, nil
}

// runPingPongClient runs the client inside t's namespace, optionally through a
// prefix (setpriv, nsenter) that puts it in a user namespace.
func runPingPongClient(ctx context.Context, t *nsThread, self string, prefix []string, addr string, rounds int) (pingPongResult, error) {
	argv := commandLine(prefix, self, pingPongClientArg, addr, strconv.Itoa(rounds))
	out, err := t.run(ctx, nil, nil, argv...)
	if err != nil {
		return pingPongResult{}, err
	}
	var r pingPongResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("ping-pong client output %q: %w", out, err)
	}
	if r.Rounds == 0 {
		return r, errors.New("ping-pong client did no round")
	}
	return r, nil
}
