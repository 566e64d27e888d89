// Package store keeps ctnet's desired state in one bbolt database and serialises every
// change behind one exclusive file lock.
//
// Layout (all keys are bytes):
//
//	meta          "schema" → version
//	networks      name → Network (JSON);  network_ids  id → name
//	containers    name → Container (JSON); container_ids id → name
//	leases        network id → { ip (4 or 16 bytes) → container id }
//	cursors       network id → last allocated ip
//	ports         proto(1) port(2) ip(16) → container id
//	veths         host veth name → container id
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Sentinel errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrCorrupt  = errors.New("state database is corrupted")
)

const schemaVersion = 1

var (
	bMeta         = []byte("meta")
	bNetworks     = []byte("networks")
	bNetworkIDs   = []byte("network_ids")
	bContainers   = []byte("containers")
	bContainerIDs = []byte("container_ids")
	bLeases       = []byte("leases")
	bCursors      = []byte("cursors")
	bPorts        = []byte("ports")
	bVeths        = []byte("veths")
	allBuckets    = [][]byte{bMeta, bNetworks, bNetworkIDs, bContainers, bContainerIDs, bLeases, bCursors, bPorts, bVeths}
)

// Store is an open state database. While it is open this process holds the root's
// lock: exclusive for Open, shared for OpenShared.
type Store struct {
	path string
	lock *os.File
	db   *bolt.DB
	// file is the database file as bbolt opened it.
	file *os.File
	// broken is set when bbolt panicked: its locks and caches may be left half
	// updated, so the database is not used again, only released.
	broken error
}

// FileName is the database's name inside the state directory.
const FileName = "state.db"

// Open takes the exclusive lock of dir and opens dir/state.db for writing, creating
// both if needed. It waits for other ctnet processes to finish.
func Open(dir string) (*Store, error) {
	return open(dir, unix.LOCK_EX)
}

// OpenShared takes the lock shared and opens the database read-only, so readers run
// together but never see a change half made. A missing database reads as empty.
func OpenShared(dir string) (*Store, error) {
	return open(dir, unix.LOCK_SH)
}

func open(dir string, how int) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	for {
		err = unix.Flock(int(lock.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	s := &Store{path: filepath.Join(dir, FileName), lock: lock}
	readOnly := how == unix.LOCK_SH
	stamped := false // the file is as ctnet's last commit left it
	switch info, err := os.Stat(s.path); {
	case errors.Is(err, os.ErrNotExist) && readOnly:
		return s, nil
	case err == nil && info.Size() == 0:
		// bbolt would initialise an empty file as a new database. An empty file is
		// one whose creation was cut short or one that lost its content, and ctnet
		// cannot tell which: refusing it keeps the state of the kernel's objects
		// from being forgotten without a word.
		lock.Close()
		return nil, s.corrupt("open", fmt.Errorf("%w: the file is empty", ErrCorrupt))
	case err == nil && s.stampMatches(info):
		stamped = true
	case err == nil:
		if err := checkPath(s.path); err != nil {
			lock.Close()
			return nil, s.corrupt("open", err)
		}
	}
	err = s.run(func() (err error) {
		s.db, err = bolt.Open(s.path, 0o600, &bolt.Options{
			Timeout:  5 * time.Second,
			ReadOnly: readOnly,
			// The freelist is written with every commit (NoFreelistSync false). Without
			// it bbolt rebuilds the list by checking the whole tree, at every writable
			// open and every rolled-back update, and reports damage it finds there by
			// panicking in a goroutine of its own: no recover can catch that, so one
			// damaged page would crash every ctnet command instead of failing it.
			FreelistType: bolt.FreelistMapType,
			OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
				f, err := os.OpenFile(name, flag, perm)
				s.file = f
				return f, err
			},
		})
		return err
	})
	if err != nil {
		s.Close()
		return nil, s.corrupt("open", err)
	}
	if readOnly {
		return s, nil
	}
	if err := s.run(func() error {
		// A write transaction costs two fsyncs even when it changes nothing: look first.
		ready := false
		if err := s.db.View(func(btx *bolt.Tx) (err error) {
			ready, err = bucketsReady(btx)
			return err
		}); err != nil || ready {
			return err
		}
		stamped = false
		return s.db.Update(func(btx *bolt.Tx) error { return initBuckets(&Tx{tx: btx}) })
	}); err != nil {
		s.Close()
		return nil, s.corrupt("open", err)
	}
	// Checked, created or initialised just now (bbolt may have written to it too):
	// the next open need not check it again.
	if !stamped {
		s.writeStamp()
	}
	return s, nil
}

// bucketsReady reports whether the database already has every bucket and a schema
// this ctnet understands.
func bucketsReady(btx *bolt.Tx) (bool, error) {
	for _, b := range allBuckets {
		if btx.Bucket(b) == nil {
			return false, nil
		}
	}
	return true, checkSchema(btx.Bucket(bMeta).Get([]byte("schema")))
}

func checkSchema(v []byte) error {
	if v != nil && (len(v) != 1 || v[0] > schemaVersion) {
		return fmt.Errorf("state database schema %v is newer than this ctnet understands (%d): upgrade ctnet", v, schemaVersion)
	}
	return nil
}

func initBuckets(tx *Tx) error {
	for _, b := range allBuckets {
		if _, err := tx.tx.CreateBucketIfNotExists(b); errors.Is(err, bolt.ErrIncompatibleValue) {
			return fmt.Errorf("%w: %q is a value where a bucket belongs", ErrCorrupt, b)
		} else if err != nil {
			return err
		}
	}
	meta := tx.tx.Bucket(bMeta)
	v := meta.Get([]byte("schema"))
	if v == nil {
		return meta.Put([]byte("schema"), []byte{schemaVersion})
	}
	return checkSchema(v)
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database and releases the lock.
func (s *Store) Close() error {
	var err error
	switch {
	case s.broken != nil && s.file != nil:
		// bbolt may hold its own locks after a panic, and closing it would wait
		// for them. Its mapping of the file stays behind and keeps the open file,
		// and so bbolt's flock, alive after the close: unlock explicitly, or the
		// next open of the file in this process would wait for it.
		unix.Flock(int(s.file.Fd()), unix.LOCK_UN)
		err = s.file.Close()
	case s.db != nil:
		err = s.db.Close()
	}
	return errors.Join(err, s.lock.Close())
}

// Update runs fn in a read-write transaction, committed when fn returns nil.
func (s *Store) Update(fn func(*Tx) error) error {
	if s.db == nil || s.db.IsReadOnly() {
		return errors.New("update state: database opened read-only")
	}
	err := s.run(func() error {
		return s.db.Update(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
	})
	if errors.Is(err, ErrCorrupt) {
		return s.corrupt("update", err)
	}
	if err == nil {
		s.writeStamp()
	}
	return err
}

// The whole-file check before bbolt opens a file reads every page: milliseconds once
// the file has grown, on every command. A file that ctnet itself wrote last and that
// nothing has touched since needs no check. The stamp — the file's size, modification
// time and inode as they were right after ctnet's last commit or check — lives in the
// lock file, which only the holder of the exclusive lock writes.

func fileStamp(info os.FileInfo) string {
	st, _ := info.Sys().(*syscall.Stat_t)
	var ino uint64
	if st != nil {
		ino = st.Ino
	}
	return fmt.Sprintf("%d %d %d\n", info.Size(), info.ModTime().UnixNano(), ino)
}

func (s *Store) stampMatches(info os.FileInfo) bool {
	buf := make([]byte, 80)
	n, _ := s.lock.ReadAt(buf, 0)
	return n > 0 && string(buf[:n]) == fileStamp(info)
}

// writeStamp records the database file as verified; a failure only costs a check at
// the next open.
func (s *Store) writeStamp() {
	info, err := os.Stat(s.path)
	if err != nil {
		return
	}
	stamp := fileStamp(info)
	if s.lock.Truncate(0) == nil {
		s.lock.WriteAt([]byte(stamp), 0)
	}
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	if s.db == nil {
		return fn(&Tx{})
	}
	err := s.run(func() error {
		return s.db.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
	})
	if errors.Is(err, ErrCorrupt) {
		return s.corrupt("read", err)
	}
	return err
}
