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
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
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

// errPanicked marks an error made from a panic of the database library.
var errPanicked = errors.New("the database library panicked")

// catch turns a panic of the database library into an error: bbolt panics on some
// corrupted pages, and reading a page past the end of a truncated file faults
// (SIGBUS, or SIGSEGV past the mapping), which SetPanicOnFault turns into a panic
// instead of killing the process. Faults are caught only in this goroutine, where
// bbolt reads pages for Open, View and Update. A panic that starts in the caller's
// own code is a bug, not damage, and goes on: calling it corruption would tell the
// user to throw the database away.
func catch(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if !panickedInDatabase() {
				panic(r)
			}
			// A panic text can span lines; errors here are printed as one.
			err = fmt.Errorf("%w: %w: %s", ErrCorrupt, errPanicked, oneLine(fmt.Errorf("%v", r)))
		}
	}()
	return fn()
}

// panickedInDatabase reports, from a deferred function of a panicking goroutine,
// whether the panic started in bbolt or in this package's reading of its data: the
// first frame past the panic machinery and the standard library called from there.
func panickedInDatabase() bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if !inStandardLibrary(f.Function) {
			for _, prefix := range databaseCode {
				if strings.HasPrefix(f.Function, prefix) {
					return true
				}
			}
			return false
		}
		if !more {
			return false
		}
	}
}

// databaseCode is where a panic means the data is damaged: bbolt, and the code here
// that decodes what it returns.
var databaseCode = []string{
	"go.etcd.io/bbolt",
	"github.com/ctnet/ctnet/store.(*Tx).",
	"github.com/ctnet/ctnet/store.get[",
	"github.com/ctnet/ctnet/store.all[",
	"github.com/ctnet/ctnet/store.decode[",
	"github.com/ctnet/ctnet/store.lookupID",
	"github.com/ctnet/ctnet/store.initBuckets",
}

// inStandardLibrary reports whether a function name (as runtime.Frame gives it)
// belongs to the standard library, whose import paths have no dot in their first
// element.
func inStandardLibrary(function string) bool {
	first, _, _ := strings.Cut(function, "/")
	return !strings.Contains(first, ".") || !strings.Contains(function, "/")
}

// run calls fn, which uses the database, under catch; after a panic of bbolt the
// database is not used again.
func (s *Store) run(fn func() error) error {
	if s.broken != nil {
		return s.broken
	}
	err := catch(fn)
	if errors.Is(err, errPanicked) {
		s.broken = err
	}
	return err
}

// oneLine is an error's text on one line: messages here end up in one-line reports.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// damaged reports whether err means the database file is damaged, as opposed to
// being unreadable for another reason (permissions, a lock timeout).
func damaged(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, bolt.ErrInvalid) ||
		errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) ||
		strings.Contains(err.Error(), "file size too small")
}

// corrupt names the file in an error of verb ("open", "read", "update") and, when
// the file is damaged, says how to recover.
func (s *Store) corrupt(verb string, err error) error {
	if !damaged(err) {
		return fmt.Errorf("%s state database %s: %w", verb, s.path, err)
	}
	if !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	q := shellQuote(s.path)
	return fmt.Errorf("%s state database %s: %w (move it aside with `mv %s %s`; then `ctnet gc` removes the kernel objects it described, and networks must be created again)",
		verb, s.path, err, q, shellQuote(s.path+".broken"))
}

// shellQuote quotes a path for the command the recovery hint suggests.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=,:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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

// Tx is a transaction. A Tx over a database that does not exist yet reads as empty.
type Tx struct {
	tx *bolt.Tx
}

func (t *Tx) bucket(name []byte) *bolt.Bucket {
	if t.tx == nil {
		return nil
	}
	return t.tx.Bucket(name)
}

func get[T any](b *bolt.Bucket, key string) (*T, error) {
	if b == nil {
		return nil, ErrNotFound
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil, ErrNotFound
	}
	return decode[T]([]byte(key), v)
}

// decode reads one record stored under key.
func decode[T any](key, v []byte) (*T, error) {
	rec := new(T)
	if err := json.Unmarshal(v, rec); err != nil {
		return nil, fmt.Errorf("%w: record %q: %s", ErrCorrupt, key, oneLine(err))
	}
	if r, ok := any(rec).(record); ok {
		if err := r.checkRecord(string(key)); err != nil {
			return nil, fmt.Errorf("%w: record %q %v", ErrCorrupt, key, err)
		}
	}
	return rec, nil
}

func all[T any](b *bolt.Bucket) ([]*T, error) {
	var out []*T
	if b == nil {
		return out, nil
	}
	err := b.ForEach(func(k, v []byte) error {
		rec, err := decode[T](k, v)
		if err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

func put(b *bolt.Bucket, key string, rec any) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), v)
}

// Network returns the network with this name or ID (or unique ID prefix).
func (t *Tx) Network(ref string) (*Network, error) {
	n, err := get[Network](t.bucket(bNetworks), ref)
	if !errors.Is(err, ErrNotFound) {
		return n, err
	}
	name, err := lookupID(t.bucket(bNetworkIDs), ref)
	if err != nil {
		return nil, err
	}
	return get[Network](t.bucket(bNetworks), name)
}

// Networks returns all networks, ordered by name.
func (t *Tx) Networks() ([]*Network, error) { return all[Network](t.bucket(bNetworks)) }

// PutNetwork creates or replaces a network record.
func (t *Tx) PutNetwork(n *Network) error {
	if err := put(t.bucket(bNetworks), n.Name, n); err != nil {
		return err
	}
	return t.bucket(bNetworkIDs).Put([]byte(n.ID), []byte(n.Name))
}

// DeleteNetwork removes a network with its leases and cursor.
func (t *Tx) DeleteNetwork(n *Network) error {
	if err := t.bucket(bNetworks).Delete([]byte(n.Name)); err != nil {
		return err
	}
	if err := t.bucket(bNetworkIDs).Delete([]byte(n.ID)); err != nil {
		return err
	}
	if err := t.bucket(bLeases).DeleteBucket([]byte(n.ID)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
		return err
	}
	return t.bucket(bCursors).Delete([]byte(n.ID))
}

// Container returns the container with this name, ID or unique ID prefix.
func (t *Tx) Container(ref string) (*Container, error) {
	c, err := get[Container](t.bucket(bContainers), ref)
	if !errors.Is(err, ErrNotFound) {
		return c, err
	}
	name, err := lookupID(t.bucket(bContainerIDs), ref)
	if err != nil {
		return nil, err
	}
	return get[Container](t.bucket(bContainers), name)
}

// lookupID resolves an ID or a unique prefix of one (at least 4 characters).
func lookupID(b *bolt.Bucket, ref string) (string, error) {
	if b == nil || len(ref) < 4 {
		return "", ErrNotFound
	}
	c := b.Cursor()
	k, v := c.Seek([]byte(ref))
	if k == nil || !bytes.HasPrefix(k, []byte(ref)) {
		return "", ErrNotFound
	}
	if k2, _ := c.Next(); k2 != nil && bytes.HasPrefix(k2, []byte(ref)) {
		return "", fmt.Errorf("%w: %q is a prefix of more than one ID", ErrConflict, ref)
	}
	return string(v), nil
}

// Containers returns all containers, ordered by name.
func (t *Tx) Containers() ([]*Container, error) { return all[Container](t.bucket(bContainers)) }

// PutContainer creates or replaces a container record.
func (t *Tx) PutContainer(c *Container) error {
	if err := put(t.bucket(bContainers), c.Name, c); err != nil {
		return err
	}
	return t.bucket(bContainerIDs).Put([]byte(c.ID), []byte(c.Name))
}

// DeleteContainer removes a container record. Its leases, ports and veth names must
// have been released already.
func (t *Tx) DeleteContainer(c *Container) error {
	if err := t.bucket(bContainers).Delete([]byte(c.Name)); err != nil {
		return err
	}
	return t.bucket(bContainerIDs).Delete([]byte(c.ID))
}

// LeaseOwner returns the container ID holding ip on the network, or "".
func (t *Tx) LeaseOwner(networkID string, ip netip.Addr) string {
	b := t.bucket(bLeases)
	if b == nil {
		return ""
	}
	nb := b.Bucket([]byte(networkID))
	if nb == nil {
		return ""
	}
	return string(nb.Get(ip.AsSlice()))
}

// PutLease records that containerID holds ip on the network and moves the network's
// allocation cursor there.
func (t *Tx) PutLease(networkID string, ip netip.Addr, containerID string) error {
	nb, err := t.bucket(bLeases).CreateBucketIfNotExists([]byte(networkID))
	if err != nil {
		return err
	}
	if err := nb.Put(ip.AsSlice(), []byte(containerID)); err != nil {
		return err
	}
	return t.bucket(bCursors).Put([]byte(networkID), ip.AsSlice())
}

// DeleteLease releases ip on the network.
func (t *Tx) DeleteLease(networkID string, ip netip.Addr) error {
	nb := t.bucket(bLeases).Bucket([]byte(networkID))
	if nb == nil {
		return nil
	}
	return nb.Delete(ip.AsSlice())
}

// Leases returns every lease of a network: ip → container ID.
func (t *Tx) Leases(networkID string) (map[netip.Addr]string, error) {
	out := map[netip.Addr]string{}
	b := t.bucket(bLeases)
	if b == nil {
		return out, nil
	}
	nb := b.Bucket([]byte(networkID))
	if nb == nil {
		return out, nil
	}
	err := nb.ForEach(func(k, v []byte) error {
		ip, ok := netip.AddrFromSlice(k)
		if !ok {
			return fmt.Errorf("%w: lease key %x", ErrCorrupt, k)
		}
		out[ip] = string(v)
		return nil
	})
	return out, err
}

// Cursor is the last address allocated on the network (invalid if none).
func (t *Tx) Cursor(networkID string) netip.Addr {
	b := t.bucket(bCursors)
	if b == nil {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(b.Get([]byte(networkID)))
	return ip
}

func portKey(proto string, hostIP netip.Addr, port uint16) []byte {
	k := make([]byte, 3, 19)
	k[0] = protoByte(proto)
	binary.BigEndian.PutUint16(k[1:], port)
	a := hostIP.As16()
	return append(k, a[:]...)
}

func protoByte(proto string) byte {
	switch proto {
	case "tcp":
		return 6
	case "udp":
		return 17
	case "sctp":
		return 132
	}
	return 0
}

// PortHolders returns the bindings of proto/port: host IP (unspecified for all
// addresses) → container ID.
func (t *Tx) PortHolders(proto string, port uint16) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	b := t.bucket(bPorts)
	if b == nil {
		return out
	}
	prefix := portKey(proto, netip.Addr{}, port)[:3]
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != 19 {
			continue // not a key PutPort writes: a damaged database, as Ports skips it
		}
		ip := netip.AddrFrom16([16]byte(k[3:19])).Unmap()
		out[ip] = string(v)
	}
	return out
}

// PutPort records a published host port.
func (t *Tx) PutPort(p Port, containerID string) error {
	return t.bucket(bPorts).Put(portKey(p.Proto, p.HostIP, p.HostPort), []byte(containerID))
}

// DeletePort releases a published host port.
func (t *Tx) DeletePort(p Port) error {
	return t.bucket(bPorts).Delete(portKey(p.Proto, p.HostIP, p.HostPort))
}

// VethOwner returns the container ID using a host veth name, or "".
func (t *Tx) VethOwner(name string) string {
	b := t.bucket(bVeths)
	if b == nil {
		return ""
	}
	return string(b.Get([]byte(name)))
}

// PutVeth reserves a host veth name for a container.
func (t *Tx) PutVeth(name, containerID string) error {
	return t.bucket(bVeths).Put([]byte(name), []byte(containerID))
}

// DeleteVeth releases a host veth name.
func (t *Tx) DeleteVeth(name string) error { return t.bucket(bVeths).Delete([]byte(name)) }

// Veths returns every reserved host veth name → container ID.
func (t *Tx) Veths() map[string]string {
	out := map[string]string{}
	if b := t.bucket(bVeths); b != nil {
		b.ForEach(func(k, v []byte) error { out[string(k)] = string(v); return nil })
	}
	return out
}

// Meta returns a value of the meta bucket, or "".
func (t *Tx) Meta(key string) string {
	b := t.bucket(bMeta)
	if b == nil {
		return ""
	}
	return string(b.Get([]byte("x:" + key)))
}

// PutMeta sets a value of the meta bucket; an empty value deletes it.
func (t *Tx) PutMeta(key, value string) error {
	if value == "" {
		return t.bucket(bMeta).Delete([]byte("x:" + key))
	}
	return t.bucket(bMeta).Put([]byte("x:"+key), []byte(value))
}

// Ports returns every published port binding → container ID.
func (t *Tx) Ports() map[Port]string {
	out := map[Port]string{}
	b := t.bucket(bPorts)
	if b == nil {
		return out
	}
	b.ForEach(func(k, v []byte) error {
		if len(k) != 19 {
			return nil
		}
		p := Port{HostPort: binary.BigEndian.Uint16(k[1:3]), HostIP: netip.AddrFrom16([16]byte(k[3:19])).Unmap()}
		switch k[0] {
		case 6:
			p.Proto = "tcp"
		case 17:
			p.Proto = "udp"
		case 132:
			p.Proto = "sctp"
		}
		out[p] = string(v)
		return nil
	})
	return out
}
