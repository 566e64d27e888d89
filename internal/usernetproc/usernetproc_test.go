package usernetproc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeEnv makes the test binary, run as the helper, act out the answer it names.
const fakeEnv = "USERNETPROC_TEST_HELPER"

func TestMain(m *testing.M) {
	if answer := os.Getenv(fakeEnv); answer != "" {
		fakeHelper(answer)
		return
	}
	os.Exit(m.Run())
}

// fakeHelper plays ctnet-usernet: it reads the configuration, logs what it got
// (the TAP descriptor's content, the ports, an inner socket's type), then answers.
func fakeHelper(answer string) {
	stdin := bufio.NewReader(os.Stdin)
	line, _ := stdin.ReadBytes('\n')
	var cfg Config
	if err := json.Unmarshal(line, &cfg); err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	tap, _ := io.ReadAll(os.NewFile(TAPFD, "tap"))
	logger.Debug("dropped below the caller's level")
	logger.Warn("configured", "tap", string(tap), "ports", len(cfg.Ports), "mtu", cfg.MTU)
	inner := NewInner()
	for _, proto := range []string{"tcp", "sctp"} {
		f, err := inner.New(proto)
		if err != nil {
			logger.Warn("inner socket", "proto", proto, "err", err.Error())
			continue
		}
		typ, _ := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
		logger.Warn("inner socket", "proto", proto, "stream", typ == unix.SOCK_STREAM)
		f.Close()
	}
	if answer != "ok" {
		fmt.Printf("error: %s\n", answer)
		os.Exit(1)
	}
	fmt.Println("ok")
	io.Copy(io.Discard, stdin)
	os.Stderr.WriteString("not a record\n")
}

// syncBuffer is a log destination the relay writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestStart(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	newInner := func(proto string) (*os.File, error) {
		if proto != "tcp" {
			return nil, errors.New("no " + proto + " here")
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), "inner"), nil
	}
	for _, tc := range []struct {
		answer  string
		wantErr string
	}{
		{answer: "ok"},
		{answer: "port 8080 in use", wantErr: "port 8080 in use"},
	} {
		t.Run(tc.answer, func(t *testing.T) {
			t.Setenv(fakeEnv, tc.answer)
			tap := tapStandIn(t, "frames")
			var log syncBuffer
			logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn,
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				}}))
			cfg := Config{MTU: 1500, Ports: []Port{{Proto: "tcp", HostPort: 8080, ContainerPort: 80}}}
			n, err := Start(self, tap, cfg, newInner, logger)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Start: want the helper's error %q, got %v", tc.wantErr, err)
				}
			} else {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				if err := n.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
			want := []string{
				`level=WARN msg=configured mtu=1500 ports=1 tap=frames`,
				`level=WARN msg="inner socket" proto=tcp stream=true`,
				`level=WARN msg="inner socket" err="no sctp here" proto=sctp`,
			}
			if tc.wantErr == "" {
				want = append(want, `level=ERROR msg=ctnet-usernet output="not a record"`)
			}
			if got := strings.Split(strings.TrimSpace(log.String()), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("the helper's log as the caller's logger got it:\n%s\nwant:\n%s", log.String(), strings.Join(want, "\n"))
			}
		})
	}
}

// tapStandIn is a descriptor the helper reads content from, in place of a TAP device.
func tapStandIn(t *testing.T, content string) *os.File {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString(content)
	w.Close()
	return r
}

func TestHelperMissing(t *testing.T) {
	// The test binary's directory holds no ctnet-usernet.
	if _, err := Helper(); err == nil || !strings.Contains(err.Error(), "./cmd/"+HelperName) {
		t.Errorf("Helper without a helper beside the executable: want the error saying how to build it, got %v", err)
	}
}
