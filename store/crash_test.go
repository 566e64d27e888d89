package store

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashHelperEnv, when set to a directory, makes the test binary the writer that
// TestKillDuringUpdateKeepsCommittedRecords kills.
const crashHelperEnv = "CTNET_STORE_CRASH_WRITER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashHelperEnv); dir != "" {
		err := crashWriter(dir)
		fmt.Fprintln(os.Stderr, "crash writer:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// crashNetwork is transaction i's network; its label is large so that each commit
// writes several pages and grows the file.
func crashNetwork(i int) *Network {
	return &Network{ID: id64(fmt.Sprintf("%08x", i)), Name: fmt.Sprintf("n%06d", i),
		Labels: map[string]string{"fill": strings.Repeat(string(rune('a'+i%26)), 6000)}}
}

// crashExpected is the set of network indexes after transactions 0..last: each adds
// its network, and every third also deletes the network ten before it, so commits
// free pages that later ones reuse.
func crashExpected(last int) []int {
	var out []int
	for i := 0; i <= last; i++ {
		if i%3 == 0 && i >= 10 {
			out = slices.DeleteFunc(out, func(j int) bool { return j == i-10 })
		}
		out = append(out, i)
	}
	return out
}

// crashWriter commits transactions forever, continuing after the last committed
// one, and prints "committed N" after each commit returns.
func crashWriter(dir string) error {
	s, err := Open(dir)
	if err != nil {
		return err
	}
	next := 0
	if err := s.View(func(tx *Tx) error {
		ns, err := tx.Networks()
		for _, n := range ns {
			i, _ := strconv.Atoi(strings.TrimPrefix(n.Name, "n"))
			next = max(next, i+1)
		}
		return err
	}); err != nil {
		return err
	}
	for i := next; ; i++ {
		err := s.Update(func(tx *Tx) error {
			n := crashNetwork(i)
			if err := tx.PutNetwork(n); err != nil {
				return err
			}
			if err := tx.PutLease(n.ID, netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 2}), "c"); err != nil {
				return err
			}
			if i%3 == 0 && i >= 10 {
				return tx.DeleteNetwork(crashNetwork(i - 10))
			}
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Printf("committed %d\n", i)
	}
}

// TestKillDuringUpdateKeepsCommittedRecords kills a writing process with SIGKILL at
// arbitrary points of its transactions — most of a transaction's time is its commit
// writing pages and syncing — and checks after each kill that the database opens,
// passes the page check, and holds exactly the committed transactions (the one in
// flight may have committed or not, never in part).
func TestKillDuringUpdateKeepsCommittedRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills writer processes")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	reported := -1
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashHelperEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		readCommit := func() bool {
			if !lines.Scan() {
				return false
			}
			i, err := strconv.Atoi(strings.TrimPrefix(lines.Text(), "committed "))
			if err != nil {
				t.Fatalf("writer said %q", lines.Text())
			}
			reported = i
			return true
		}
		for range 1 + rng.IntN(25) {
			if !readCommit() {
				cmd.Wait()
				t.Fatalf("round %d: the writer stopped before it was killed", round)
			}
		}
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond) // land anywhere in the next transaction
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for readCommit() { // commits reported before the kill, still in the pipe
		}
		var exit *exec.ExitError
		if err := cmd.Wait(); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: writer ended with %v, want killed by SIGKILL", round, err)
		}
		checkAfterCrash(t, dir, reported)
	}
}

// checkAfterCrash opens dir as the next ctnet command would and checks that it
// holds the transactions up to reported, or one more.
func checkAfterCrash(t *testing.T, dir string, reported int) {
	t.Helper()
	if err := checkPath(filepath.Join(dir, FileName)); err != nil {
		t.Fatalf("after a kill following commit %d: %v", reported, err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("after a kill following commit %d: %v", reported, err)
	}
	defer s.Close()
	mustView(t, s, func(tx *Tx) error {
		ns, err := tx.Networks()
		if err != nil {
			t.Fatalf("after a kill following commit %d: %v", reported, err)
		}
		var got []int
		for _, n := range ns {
			i, _ := strconv.Atoi(strings.TrimPrefix(n.Name, "n"))
			got = append(got, i)
			want := crashNetwork(i)
			if n.ID != want.ID || n.Labels["fill"] != want.Labels["fill"] {
				t.Errorf("network %s came back changed", n.Name)
			}
			if leases, err := tx.Leases(n.ID); err != nil || len(leases) != 1 {
				t.Errorf("network %s: leases %v, %v; want its one lease", n.Name, leases, err)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, crashExpected(reported)) && !slices.Equal(got, crashExpected(reported+1)) {
			t.Fatalf("after a kill following commit %d: networks %v, want %v (or with transaction %d)",
				reported, got, crashExpected(reported), reported+1)
		}
		return nil
	})
}
