package store

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// requireCorruptError fails unless err reports a damaged database so that the user
// can act on it: ErrCorrupt, one line, naming the file and how to move it aside.
func requireCorruptError(t *testing.T, path string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", path)
	}
	msg := err.Error()
	switch {
	case !errors.Is(err, ErrCorrupt):
		t.Errorf("%s: error does not match ErrCorrupt: %q", path, msg)
	case strings.ContainsAny(msg, "\n\r"):
		t.Errorf("%s: error spans lines: %q", path, msg)
	case !strings.Contains(msg, path):
		t.Errorf("error does not name the file %s: %q", path, msg)
	case !strings.Contains(msg, "`mv ") || !strings.Contains(msg, "ctnet gc"):
		t.Errorf("%s: error does not say how to recover: %q", path, msg)
	}
}

// buildDatabase writes a state directory with records in every bucket, in one
// transaction per container and network, and returns its directory; the last
// transaction adds the network "last". Padding makes records span pages.
func buildDatabase(t testing.TB, records, padding int) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range records {
		err := s.Update(func(tx *Tx) error {
			n := &Network{ID: id64(fmt.Sprintf("%04x", i)), Name: fmt.Sprintf("net%d", i),
				Subnet: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)), Labels: map[string]string{"pad": strings.Repeat("x", padding)}}
			c := &Container{ID: id64(fmt.Sprintf("c%03x", i)), Name: fmt.Sprintf("c%d", i), Command: []string{"sleep", "1"}}
			ip := netip.AddrFrom4([4]byte{10, byte(i), 0, 2})
			for _, err := range []error{
				tx.PutNetwork(n), tx.PutContainer(c), tx.PutLease(n.ID, ip, c.ID),
				tx.PutPort(Port{Proto: "tcp", HostPort: uint16(8000 + i)}, c.ID), tx.PutVeth(fmt.Sprintf("vc%08x", i), c.ID),
			} {
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Update(func(tx *Tx) error { return tx.PutNetwork(&Network{ID: id64("ffff"), Name: "last"}) }); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readEverything reads every record and index, as ls, inspect and gc do.
func readEverything(s *Store) (networks []string, err error) {
	err = s.View(func(tx *Tx) error {
		ns, err := tx.Networks()
		if err != nil {
			return err
		}
		for _, n := range ns {
			networks = append(networks, n.Name)
			// Keys out of order (damage bbolt does not check when reading) can hide
			// a key from a lookup that a full scan still finds: not found, not a crash.
			if _, err := tx.Network(n.Name); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if _, err := tx.Leases(n.ID); err != nil {
				return err
			}
			tx.Cursor(n.ID, false)
		}
		cs, err := tx.Containers()
		if err != nil {
			return err
		}
		for _, c := range cs {
			if _, err := tx.Container(c.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		for p := range tx.Ports() {
			tx.PortHolders(p.Proto, p.HostPort)
		}
		for range tx.Veths() {
		}
		tx.Meta("x")
		return nil
	})
	slices.Sort(networks)
	return networks, err
}

// copyDatabase copies dir's database into a fresh directory, changed by damage.
func copyDatabase(t *testing.T, dir string, damage func([]byte) []byte) (string, string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	path := filepath.Join(out, FileName)
	if err := os.WriteFile(path, damage(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return out, path
}

// openAndRead opens dir both ways and reads everything; every failure must be a
// corruption error naming the file. It returns whether both opens and reads worked.
func openAndRead(t *testing.T, dir string) bool {
	t.Helper()
	path := filepath.Join(dir, FileName)
	ok := true
	for _, open := range []struct {
		name string
		fn   func(string) (*Store, error)
	}{{"Open", Open}, {"OpenShared", OpenShared}} {
		s, err := open.fn(dir)
		if err != nil {
			requireCorruptError(t, path, err)
			ok = false
			continue
		}
		if _, err := readEverything(s); err != nil {
			requireCorruptError(t, path, err)
			ok = false
		}
		if err := s.Close(); err != nil {
			t.Errorf("%s: close: %v", open.name, err)
		}
	}
	return ok
}

func TestTruncatedDatabase(t *testing.T) {
	dir := buildDatabase(t, 20, 300)
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	size, page := int(fi.Size()), os.Getpagesize()
	for _, n := range []int{1, 100, page - 1, page, 2*page - 1, 2 * page, 3 * page, 4*page + 17, size / 2, size - page, size - 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			damaged, _ := copyDatabase(t, dir, func(b []byte) []byte { return b[:n] })
			// bbolt faults reading a page past the end of the file: the cut must
			// come back as an error, not kill the process. Cutting only unused pages
			// may leave a readable database.
			if ok := openAndRead(t, damaged); ok && n < 2*page {
				t.Errorf("a database of %d bytes, less than its two meta pages, opened", n)
			}
		})
	}
}

func TestRandomBytesDatabase(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 4096, 64 << 10} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if openAndRead(t, dir) {
			t.Errorf("%d random bytes opened as a database", size)
		}
	}
}

func TestEmptyDatabaseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, open := range []func(string) (*Store, error){Open, OpenShared} {
		s, err := open(dir)
		if err == nil {
			s.Close()
			t.Fatal("an empty state.db opened as an empty database: the state it held would be forgotten")
		}
		requireCorruptError(t, path, err)
		if !strings.Contains(err.Error(), "empty") {
			t.Errorf("error does not say the file is empty: %v", err)
		}
	}
	// The file is left as it was, for the user to move aside.
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("the empty file was changed: %v, %v", fi, err)
	}
}

// overwriteMeta damages the meta page with the given index, leaving the page header.
func overwriteMeta(index int) func([]byte) []byte {
	return func(b []byte) []byte {
		off := index * os.Getpagesize()
		for i := off + 16; i < off+80; i++ {
			b[i] ^= 0x5a
		}
		return b
	}
}

func TestCorruptedMetaPages(t *testing.T) {
	dir := buildDatabase(t, 20, 300)
	want, err := func() ([]string, error) {
		s, err := OpenShared(dir)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		return readEverything(s)
	}()
	if err != nil {
		t.Fatal(err)
	}
	beforeLast := slices.DeleteFunc(slices.Clone(want), func(n string) bool { return n == "last" })

	// bbolt writes the two meta pages alternately: with one damaged it opens from
	// the other, losing at most the last transaction.
	for _, index := range []int{0, 1} {
		damaged, _ := copyDatabase(t, dir, overwriteMeta(index))
		s, err := Open(damaged)
		if err != nil {
			t.Fatalf("meta page %d damaged: Open = %v, want it to use the other meta page", index, err)
		}
		got, err := readEverything(s)
		s.Close()
		if err != nil || !slices.Equal(got, want) && !slices.Equal(got, beforeLast) {
			t.Errorf("meta page %d damaged: networks %v, %v; want %v or %v", index, got, err, want, beforeLast)
		}
	}

	damaged, _ := copyDatabase(t, dir, func(b []byte) []byte { return overwriteMeta(1)(overwriteMeta(0)(b)) })
	if openAndRead(t, damaged) {
		t.Error("a database with both meta pages damaged opened")
	}
}

// putRaw writes a value past the store's encoding, as a damaged file would hold it.
func putRaw(t testing.TB, s *Store, bucket, key string, value []byte) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(key), value) })
	if err != nil {
		t.Fatal(err)
	}
}

func TestInvalidJSONRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	path := filepath.Join(dir, FileName)
	good := sampleNetwork()
	mustUpdate(t, s, func(tx *Tx) error { return tx.PutNetwork(good) })
	putRaw(t, s, "networks", "bad", []byte(`{"id": "bbbb0000", "subnet": 7`))
	putRaw(t, s, "network_ids", "bbbb0000", []byte("bad"))
	putRaw(t, s, "containers", "wrongtype", []byte(`["not", "an", "object"]`))
	putRaw(t, s, "containers", "badaddr", []byte(`{"networks": [{"ip": "not-an-ip"}]}`))
	// Valid JSON that breaks what the rest of ctnet relies on.
	putRaw(t, s, "containers", "shortid", []byte(`{"id": "1", "name": "shortid"}`))
	putRaw(t, s, "containers", "shared", []byte(`{"id": "`+id64("5")+`", "name": "shared", "shared_with": "x"}`))
	putRaw(t, s, "networks", "renamed", []byte(`{"id": "`+id64("6")+`", "name": "other"}`))

	tests := []struct {
		name string
		read func(*Tx) error
	}{
		{"network by name", func(tx *Tx) error { _, err := tx.Network("bad"); return err }},
		{"network by ID prefix", func(tx *Tx) error { _, err := tx.Network("bbbb"); return err }},
		{"every network", func(tx *Tx) error { _, err := tx.Networks(); return err }},
		{"container of the wrong JSON type", func(tx *Tx) error { _, err := tx.Container("wrongtype"); return err }},
		{"container with a bad address", func(tx *Tx) error { _, err := tx.Container("badaddr"); return err }},
		{"every container", func(tx *Tx) error { _, err := tx.Containers(); return err }},
		{"container with a short ID", func(tx *Tx) error { _, err := tx.Container("shortid"); return err }},
		{"container sharing a namespace that is no ID", func(tx *Tx) error { _, err := tx.Container("shared"); return err }},
		{"network stored under another name", func(tx *Tx) error { _, err := tx.Network("renamed"); return err }},
	}
	for _, tt := range tests {
		err := s.View(tt.read)
		requireCorruptError(t, path, err)
		if !strings.Contains(err.Error(), "record ") {
			t.Errorf("%s: error does not name the record: %v", tt.name, err)
		}
		if !strings.HasPrefix(err.Error(), "read state database") {
			t.Errorf("%s: error does not say what was being done: %v", tt.name, err)
		}
		// An update that reads a damaged record fails the same way, and changes nothing.
		err = s.Update(func(tx *Tx) error {
			if err := tx.PutVeth("vcnew", "x"); err != nil {
				return err
			}
			return tt.read(tx)
		})
		requireCorruptError(t, path, err)
	}
	// The damage stays with its records: the rest reads, and the file still opens.
	mustView(t, s, func(tx *Tx) error {
		if n, err := tx.Network(good.Name); err != nil || n.ID != good.ID {
			t.Errorf("Network(%s) next to a damaged record = %v, %v", good.Name, n, err)
		}
		if owner := tx.VethOwner("vcnew"); owner != "" {
			t.Errorf("a failed update left veth vcnew owned by %q", owner)
		}
		return nil
	})
}

// FuzzRecordJSON stores arbitrary bytes as network and container records and reads
// them every way the tool does: a record either decodes or is reported as damaged,
// naming the file; nothing panics.
func FuzzRecordJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"name":"x","subnet":"10.0.0.0/8"}`, `{"subnet":"::/200"}`, `{"created":"yesterday"}`,
		`{"networks":[{"ip":"1.2.3.4.5"}]}`, `null`, `[]`, `"str"`, `{"labels":{"a":1}}`, "\xff", ``} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	s, err := Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	// Each input commits several times; without fsync an input takes microseconds, not
	// milliseconds, and the fuzzer's time limit cannot cut one off mid-way.
	s.db.NoSync = true
	path := filepath.Join(dir, FileName)
	f.Fuzz(func(t *testing.T, value []byte) {
		putRaw(t, s, "networks", "n", value)
		putRaw(t, s, "network_ids", "nnnn0000", []byte("n"))
		putRaw(t, s, "containers", "c", value)
		putRaw(t, s, "container_ids", "cccc0000", []byte("c"))
		for _, read := range []func(*Tx) error{
			func(tx *Tx) error { _, err := tx.Network("n"); return err },
			func(tx *Tx) error { _, err := tx.Network("nnnn"); return err },
			func(tx *Tx) error { _, err := tx.Networks(); return err },
			func(tx *Tx) error { _, err := tx.Container("c"); return err },
			func(tx *Tx) error { _, err := tx.Container("cccc"); return err },
			func(tx *Tx) error { _, err := tx.Containers(); return err },
		} {
			if err := s.View(read); err != nil && !errors.Is(err, ErrNotFound) {
				requireCorruptError(t, path, err)
			}
		}
	})
}

// FuzzBucketEntries stores arbitrary keys and values in the index buckets (leases,
// cursors, ports, veths, ID maps) and reads them back: damaged entries are skipped or
// reported, never indexed past; an entry of the right shape reads back as written,
// through every reader that shows it; and the entries around it read as before.
func FuzzBucketEntries(f *testing.F) {
	f.Add(uint8(0), []byte{10, 0, 0, 2}, []byte("c1"))
	f.Add(uint8(0), []byte{1, 2, 3}, []byte("c1"))
	f.Add(uint8(1), []byte(id64("aa")), []byte{1, 2})
	f.Add(uint8(2), []byte{6, 0x1f, 0x90}, []byte("c1"))
	f.Add(uint8(2), []byte{6, 0x1f, 0x90, 1}, []byte("c1"))
	f.Add(uint8(3), []byte("vc1"), []byte{})
	f.Add(uint8(4), []byte("aaaa"), []byte("missing"))
	dir := f.TempDir()
	s, err := Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	// Each input commits several times; without fsync an input takes microseconds, not
	// milliseconds, and the fuzzer's time limit cannot cut one off mid-way.
	s.db.NoSync = true
	path := filepath.Join(dir, FileName)
	netID := id64("aa")
	leased := netip.MustParseAddr("10.0.0.9")
	seed := func(tx *Tx) error {
		if err := tx.PutNetwork(&Network{ID: netID, Name: "n"}); err != nil {
			return err
		}
		return tx.PutLease(netID, leased, "c0")
	}
	if err := s.Update(seed); err != nil {
		f.Fatal(err)
	}
	buckets := [][]byte{bLeases, bCursors, bPorts, bVeths, bNetworkIDs, bContainerIDs}
	var previous func(*bolt.Tx) error // removes the entry the last input stored
	f.Fuzz(func(t *testing.T, which uint8, key, value []byte) {
		if len(key) == 0 || len(key) > bolt.MaxKeySize {
			return // bbolt refuses these keys itself
		}
		bucket := buckets[int(which)%len(buckets)]
		in := func(tx *bolt.Tx) *bolt.Bucket {
			if bytes.Equal(bucket, bLeases) {
				return tx.Bucket(bLeases).Bucket([]byte(netID))
			}
			return tx.Bucket(bucket)
		}
		// Each input starts from the seed alone, so that what it finds reproduces: the
		// entry the one before stored goes in the same commit.
		err := s.db.Update(func(tx *bolt.Tx) error {
			if undo := previous; undo != nil {
				previous = nil
				if err := undo(tx); err != nil {
					return err
				}
				if err := seed(&Tx{tx: tx}); err != nil {
					return err
				}
			}
			return in(tx).Put(key, value)
		})
		if err != nil {
			t.Fatal(err)
		}
		stored := slices.Clone(key) // the fuzzer reuses the input's memory
		previous = func(tx *bolt.Tx) error { return in(tx).Delete(stored) }
		err = s.View(func(tx *Tx) error {
			tx.Cursor(string(key), false)
			tx.Cursor(netID, false)
			tx.LeaseOwner(netID, leased)
			for p := range tx.Ports() {
				tx.PortHolders(p.Proto, p.HostPort)
			}
			if len(key) >= 3 {
				tx.PortHolders(map[byte]string{6: "tcp", 17: "udp", 132: "sctp"}[key[0]], uint16(key[1])<<8|uint16(key[2]))
			}
			for range tx.Veths() {
			}
			if _, err := tx.Network(string(key)); err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) {
				return err
			}
			if _, err := tx.Container(string(key)); err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) {
				return err
			}
			_, err := tx.Leases(netID)
			return err
		})
		if err != nil {
			requireCorruptError(t, path, err)
		}
		s.View(func(tx *Tx) error {
			checkBucketEntry(t, tx, bucket, key, value, netID, leased)
			return nil
		})
	})
}

// checkBucketEntry checks what the readers show after key = value was stored in bucket
// next to network "n" (netID) holding a lease of leased for container c0.
func checkBucketEntry(t *testing.T, tx *Tx, bucket, key, value []byte, netID string, leased netip.Addr) {
	t.Helper()
	if n, err := tx.Network("n"); err != nil || n.ID != netID {
		t.Errorf("network n by name reads %+v, %v", n, err)
	}
	wantOwner := "c0"
	if bytes.Equal(bucket, bLeases) && bytes.Equal(key, leased.AsSlice()) {
		wantOwner = string(value)
	}
	if got := tx.LeaseOwner(netID, leased); got != wantOwner {
		t.Errorf("the lease of %s reads %q, want %q", leased, got, wantOwner)
	}
	wantCursor := leased
	if bytes.Equal(bucket, bCursors) && string(key) == netID {
		wantCursor, _ = netip.AddrFromSlice(value)
	}
	if got := tx.Cursor(netID, false); got != wantCursor {
		t.Errorf("the cursor reads %v, want %v", got, wantCursor)
	}
	switch {
	case bytes.Equal(bucket, bLeases):
		leases, err := tx.Leases(netID)
		ip, ok := netip.AddrFromSlice(key)
		if !ok {
			if err == nil {
				t.Errorf("a lease key of %d bytes reads without error: %v", len(key), leases)
			}
			return
		}
		want := map[netip.Addr]string{leased: "c0", ip: string(value)}
		if err != nil || !maps.Equal(leases, want) {
			t.Errorf("leases read %v, %v; want %v", leases, err, want)
		}
	case bytes.Equal(bucket, bCursors):
		want, _ := netip.AddrFromSlice(value)
		if got := tx.Cursor(string(key), false); got != want {
			t.Errorf("cursor %q reads %v, want %v (from %x)", key, got, want, value)
		}
	case bytes.Equal(bucket, bPorts):
		ports := tx.Ports()
		proto, known := map[byte]string{6: "tcp", 17: "udp", 132: "sctp"}[key[0]]
		if len(key) != 19 || !known {
			// Skipped: a key PutPort never writes, or a protocol ctnet never publishes.
			for p := range ports {
				if p.Proto != "" {
					t.Errorf("a port key %x reads as %+v", key, p)
				}
			}
			return
		}
		p := Port{Proto: proto, HostPort: uint16(key[1])<<8 | uint16(key[2]), HostIP: netip.AddrFrom16([16]byte(key[3:])).Unmap()}
		if got, ok := ports[p]; !ok || got != string(value) || len(ports) != 1 {
			t.Errorf("ports read %v, want only %+v: %q", ports, p, value)
		}
		if got := tx.PortHolders(p.Proto, p.HostPort)[p.HostIP]; got != string(value) {
			t.Errorf("the holder of %+v reads %q, want %q", p, got, value)
		}
		if k := portKey(p.Proto, p.HostIP, p.HostPort); !bytes.Equal(k, key) {
			t.Errorf("port %+v read from key %x is written as %x", p, key, k)
		}
	case bytes.Equal(bucket, bVeths):
		if got := maps.Collect(tx.Veths()); !maps.Equal(got, map[string]string{string(key): string(value)}) {
			t.Errorf("veths read %v, want only %q: %q", got, key, value)
		}
		if got := tx.VethOwner(string(key)); got != string(value) {
			t.Errorf("veth %q is owned by %q, want %q", key, got, value)
		}
	}
}

// openHangBound is how long FuzzOpenStateFile lets an input open and read before it
// calls it a hang.
const openHangBound = time.Second

// FuzzOpenStateFile opens arbitrary bytes as state.db, seeded with a real database
// and damaged copies of it: the tool reports a damaged file, it never crashes on one.
func FuzzOpenStateFile(f *testing.F) {
	// A small database: the fuzzer slows down with the size of its inputs.
	dir := buildDatabase(f, 3, 0)
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		f.Fatal(err)
	}
	page := os.Getpagesize()
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add(data[:4*page])
	f.Add(overwriteMeta(0)(slices.Clone(data)))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		// A damaged tree can make bbolt loop forever, and the fuzzer does not
		// notice a hang before its own time is up: fail the input instead, in well
		// under the few seconds CI fuzzes for (scripts/fuzz-short.sh), so that the
		// input is saved. The bound is for hangs, not speed: opening takes
		// milliseconds, under the race detector too.
		done := make(chan bool, 1)
		go func() { done <- openAndRead(t, dir) }()
		select {
		case ok := <-done:
			if !ok {
				return
			}
		case <-time.After(openHangBound):
			t.Fatal("opening and reading the file did not finish: a loop in the page tree?")
		}
		// A database that reads must also take a change.
		s, err := Open(dir)
		if err != nil {
			requireCorruptError(t, filepath.Join(dir, FileName), err)
			return
		}
		defer s.Close()
		if err := s.Update(func(tx *Tx) error { return tx.PutNetwork(&Network{ID: id64("9999"), Name: "new"}) }); err != nil {
			requireCorruptError(t, filepath.Join(dir, FileName), err)
		}
	})
}

// TestPanicInDatabaseLeavesStoreUsable checks what follows a panic inside bbolt (here
// a fault reading past the end of a file truncated while it was open): the store
// reports it again without touching bbolt, closes without waiting for locks bbolt
// may still hold, and a later open in the same process gets an error, not a wait.
func TestPanicInDatabaseLeavesStoreUsable(t *testing.T) {
	dir := buildDatabase(t, 20, 300)
	damaged, path := copyDatabase(t, dir, func(b []byte) []byte { return b })
	s, err := OpenShared(damaged)
	if err != nil {
		t.Fatal(err)
	}
	// Everything past the meta pages goes; bbolt's mapping still covers it.
	if err := os.Truncate(path, int64(2*os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	read := func(tx *Tx) error { _, err := tx.Networks(); return err }
	first := s.View(read)
	requireCorruptError(t, path, first)
	if !errors.Is(first, errPanicked) {
		t.Fatalf("reading past the end of the file: %v, want a recovered panic", first)
	}
	if again := s.View(read); !errors.Is(again, errPanicked) {
		t.Errorf("second View after a panic = %v, want the first failure again", again)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after a panic: %v", err)
	}
	for _, open := range []func(string) (*Store, error){OpenShared, Open} {
		s, err := open(damaged)
		if err == nil {
			_, err = readEverything(s)
			s.Close()
		}
		requireCorruptError(t, path, err)
	}
}

// TestCallerPanicIsNotCorruption checks that a panic in the caller's own function (a
// bug) is not reported as a damaged database, which would tell the user to move it
// aside.
func TestCallerPanicIsNotCorruption(t *testing.T) {
	s := openTemp(t)
	var nilNetwork *Network
	for name, txn := range map[string]func(func(*Tx) error) error{"Update": s.Update, "View": s.View} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: a nil dereference in the caller's function did not panic", name)
				}
			}()
			err := txn(func(*Tx) error {
				_ = nilNetwork.Name
				return nil
			})
			t.Errorf("%s: the caller's panic came back as the error %v", name, err)
		}()
	}
	// The store is still usable: the panic was not bbolt's.
	mustUpdate(t, s, func(tx *Tx) error { return tx.PutNetwork(sampleNetwork()) })
}
