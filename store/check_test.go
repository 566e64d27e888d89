package store

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// pageOfType returns the lowest page in use (reached from the meta page in use, or
// its freelist page) with the given flags, so damage lands where it matters.
func pageOfType(t *testing.T, data []byte, flag uint16) int {
	t.Helper()
	c, err := walkFile(data)
	if err != nil {
		t.Fatalf("the undamaged database: %v", err)
	}
	page := os.Getpagesize()
	for id := 2; (id+1)*page <= len(data); id++ {
		inUse := id < len(c.seen) && c.seen[id] || uint64(id) == c.meta.freelist
		if inUse && binary.NativeEndian.Uint16(data[id*page+8:]) == flag {
			return id
		}
	}
	t.Fatalf("no page in use with flags %#x", flag)
	return 0
}

// TestCheckFileRefusesDamagedTrees damages a valid database in the ways bbolt does
// not survive — it loops forever on a page that is its own child, faults on a page
// past the end, panics in a goroutine when rebuilding a freelist — and checks that
// opening it is refused with the damage named, before bbolt reads it.
func TestCheckFileRefusesDamagedTrees(t *testing.T) {
	dir := buildDatabase(t, 60, 2000) // enough records for branch pages
	page := os.Getpagesize()
	u64 := binary.NativeEndian.PutUint64
	tests := []struct {
		name   string
		damage func(t *testing.T, b []byte)
		why    string
	}{
		{"a branch page that is its own child", func(t *testing.T, b []byte) {
			id := pageOfType(t, b, branchPageFlag)
			u64(b[id*page+pageHeaderSize+8:], uint64(id)) // the first element's child
		}, "reached twice"},
		{"a child past the high-water mark", func(t *testing.T, b []byte) {
			id := pageOfType(t, b, branchPageFlag)
			u64(b[id*page+pageHeaderSize+8:], 1<<40)
		}, "outside the database"},
		{"a page that names another page", func(t *testing.T, b []byte) {
			id := pageOfType(t, b, leafPageFlag)
			u64(b[id*page:], uint64(id+1))
		}, "identifies itself"},
		{"a leaf turned into a freelist page", func(t *testing.T, b []byte) {
			id := pageOfType(t, b, leafPageFlag)
			binary.NativeEndian.PutUint16(b[id*page+8:], freelistFlag)
		}, "has flags"},
		{"keys out of order", func(t *testing.T, b []byte) {
			id := pageOfType(t, b, branchPageFlag)
			// Give the second element the first one's key position: equal keys.
			e1, e2 := id*page+pageHeaderSize, id*page+pageHeaderSize+branchElemSize
			pos1 := binary.NativeEndian.Uint32(b[e1:])
			binary.NativeEndian.PutUint32(b[e2:], pos1-branchElemSize)
			binary.NativeEndian.PutUint32(b[e2+4:], binary.NativeEndian.Uint32(b[e1+4:]))
		}, "does not follow"},
		{"a key past its page", func(t *testing.T, b []byte) {
			id := pageOfType(t, b, leafPageFlag)
			binary.NativeEndian.PutUint32(b[id*page+pageHeaderSize+8:], 1<<30) // the first element's key size
		}, "past the page"},
		{"a freelist that lists a page in use", func(t *testing.T, b []byte) {
			fl := pageOfType(t, b, freelistFlag)
			used := pageOfType(t, b, leafPageFlag)
			binary.NativeEndian.PutUint16(b[fl*page+10:], 1)
			u64(b[fl*page+pageHeaderSize:], uint64(used))
		}, "not a free page"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			damaged, path := copyDatabase(t, dir, func(b []byte) []byte { tt.damage(t, b); return b })
			// The newest meta page must still be the one in use: damage only data pages.
			for _, open := range []func(string) (*Store, error){Open, OpenShared} {
				s, err := open(damaged)
				if err == nil {
					s.Close()
					t.Fatalf("opened a database with %s", tt.name)
				}
				requireCorruptError(t, path, err)
				if !strings.Contains(err.Error(), tt.why) {
					t.Errorf("error %q does not say %q", err, tt.why)
				}
			}
		})
	}
}

// TestCheckFileAcceptsWhatBboltWrites checks the checker against databases bbolt
// wrote: small, multi-page, with deletions (free pages), inline and nested buckets.
func TestCheckFileAcceptsWhatBboltWrites(t *testing.T) {
	for _, size := range [][2]int{{0, 0}, {1, 0}, {3, 0}, {60, 2000}} {
		dir := buildDatabase(t, size[0], size[1])
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		// Deletions leave free and pending pages behind.
		mustUpdate(t, s, func(tx *Tx) error {
			ns, err := tx.Networks()
			for i, n := range ns {
				if i%2 == 0 && err == nil {
					err = tx.DeleteNetwork(n)
				}
			}
			return err
		})
		s.Close()
		if err := checkPath(filepath.Join(dir, FileName)); err != nil {
			t.Errorf("%d records of %d bytes: %v", size[0], size[1], err)
		}
	}
}

// TestOpensDatabaseWithoutFreelist opens a database written the way earlier ctnet
// versions wrote it (bbolt's NoFreelistSync, no freelist page): it opens, keeps its
// records, and from then on has a freelist page.
func TestOpensDatabaseWithoutFreelist(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(btx *bolt.Tx) error {
		if err := initBuckets(&Tx{tx: btx}); err != nil {
			return err
		}
		return (&Tx{tx: btx}).PutNetwork(sampleNetwork())
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	c, err := walkFile(mustReadFile(t, path))
	if err != nil {
		t.Fatalf("the old-style database: %v", err)
	}
	if c.meta.freelist != noFreelist {
		t.Fatalf("the old-style database has freelist page %d; want none", c.meta.freelist)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustView(t, s, func(tx *Tx) error {
		if _, err := tx.Network(sampleNetwork().Name); err != nil {
			t.Errorf("record of the old-style database: %v", err)
		}
		return nil
	})
	s.Close()
	if c, err = walkFile(mustReadFile(t, path)); err != nil {
		t.Fatalf("after an open by this version: %v", err)
	}
	if c.meta.freelist == noFreelist {
		t.Errorf("after an open by this version the database has no freelist page")
	}
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
