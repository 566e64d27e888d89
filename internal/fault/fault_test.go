package fault

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A default build of ctnet has no crash hook: nothing in it reads
// CTNET_TEST_KILL_AFTER, and none of the hook's state is linked in. The build with
// the tag, which the end-to-end tests run, is the positive control.
func TestDefaultBuildHasNoCrashHook(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command")
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		tags     []string
		wantHook bool
	}{
		{"default", nil, false},
		{BuildTag, []string{"-tags", BuildTag}, true},
	} {
		bin := filepath.Join(dir, tc.name)
		build := exec.Command("go", append(append([]string{"build"}, tc.tags...), "-o", bin, "./cmd/ctnet")...)
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v: %s", tc.tags, err, out)
		}
		symbols, err := exec.Command("go", "tool", "nm", bin).Output()
		if err != nil {
			t.Fatalf("go tool nm %s: %v", bin, err)
		}
		image, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		hasState := bytes.Contains(symbols, []byte("github.com/ctnet/ctnet/internal/fault.killAfter"))
		readsEnv := bytes.Contains(image, []byte(EnvKillAfter))
		if hasState != tc.wantHook || readsEnv != tc.wantHook {
			t.Errorf("%s build: hook state linked in %t, %s in the binary %t; want %t", tc.name, hasState, EnvKillAfter, readsEnv, tc.wantHook)
		}
	}
}
