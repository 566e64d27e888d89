package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-v"}} {
		var stdout, stderr bytes.Buffer
		code := execute(args, strings.NewReader(""), &stdout, &stderr)
		if code != 0 || !strings.HasPrefix(stdout.String(), "ctnet ") || !strings.Contains(stdout.String(), "go1.") {
			t.Errorf("ctnet %v: status %d, stdout %q, stderr %q; want status 0 and \"ctnet VERSION (goX, os/arch)\"",
				args, code, stdout.String(), stderr.String())
		}
	}
}
