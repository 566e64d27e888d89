package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/bits"
	"os"
)

// checkPath walks the page tree of a bbolt file before bbolt opens it, trusting
// nothing it reads. bbolt trusts its pages: on a damaged tree its cursors
// loop forever (a page that is its own child), its reads fault past the end of the
// file, and its freelist rebuild panics in a goroutine of its own, none of which the
// caller can recover from. The checks here are the invariants bbolt's own checker
// (tx.Check) verifies — every page in bounds and of the right type, reached once,
// keys in order — plus the freelist: so what passes is a tree bbolt can walk.
//
// The layout read here is bbolt's file format (version 2), unchanged since boltdb:
// a page header {id u64, flags u16, count u16, overflow u32}; meta pages 0 and 1;
// branch elements {pos u32, ksize u32, pgid u64} and leaf elements {flags u32,
// pos u32, ksize u32, vsize u32}, pos counted from the element itself; a bucket value
// {root u64, sequence u64}, followed by an inline leaf page when root is 0. Integers
// are in the machine's byte order.
func checkPath(path string) error {
	// Read whole, in one read: ctnet's database is small, and walking it in memory
	// costs less than a read per page.
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	_, err = walkFile(data)
	return err
}

// walkFile checks a database file's content and returns what it walked: the pages
// reached, and the meta page in use.
func walkFile(data []byte) (*fileCheck, error) {
	c := &fileCheck{data: data}
	var err error
	if c.meta, err = c.chooseMeta(); err != nil {
		return nil, err
	}
	c.pageSize, c.hwm = uint64(c.meta.pageSize), c.meta.pgid
	if pages := uint64(len(data)) / c.pageSize; c.hwm < 2 || c.hwm > pages {
		return nil, fmt.Errorf("%w: the meta page counts %d pages, the file holds %d", ErrCorrupt, c.hwm, pages)
	}
	c.seen = make([]bool, c.hwm)
	if err := c.bucket(c.meta.root, nil); err != nil {
		return nil, err
	}
	return c, c.freelist(c.meta.freelist)
}

const (
	pageHeaderSize  = 16
	branchElemSize  = 16
	leafElemSize    = 16
	bucketValueSize = 16
	metaSize        = 64 // through the checksum
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	branchPageFlag  = 0x01
	leafPageFlag    = 0x02
	freelistFlag    = 0x10
	bucketLeafFlag  = 0x01
	noFreelist      = ^uint64(0)
)

var native = binary.NativeEndian

type meta struct {
	pageSize             uint32
	root                 uint64
	freelist, pgid, txid uint64
}

type fileCheck struct {
	data          []byte
	meta          meta
	pageSize, hwm uint64
	seen          []bool // by page ID, the pages reached so far: a second visit is a cycle or a shared page
}

// at returns n bytes of the file from off, or an error if the file is shorter.
func (c *fileCheck) at(off, n uint64) ([]byte, error) {
	if off > uint64(len(c.data)) || n > uint64(len(c.data))-off {
		return nil, fmt.Errorf("%w: %d bytes at %d are past the end of the file", ErrCorrupt, n, off)
	}
	return c.data[off : off+n], nil
}

// readMeta reads the meta page at off, or says why it is not valid; as bbolt, it
// checks the magic number, the version and the checksum.
func (c *fileCheck) readMeta(off int64) (meta, error) {
	b, err := c.at(uint64(off), pageHeaderSize+metaSize)
	if err != nil {
		return meta{}, fmt.Errorf("meta page at %d: %w", off, err)
	}
	mb := b[pageHeaderSize:]
	h := fnv.New64a()
	h.Write(mb[:56])
	switch {
	case native.Uint32(mb[0:]) != boltMagic:
		return meta{}, fmt.Errorf("%w: meta page at %d: not a bbolt database", ErrCorrupt, off)
	case native.Uint32(mb[4:]) != boltVersion:
		return meta{}, fmt.Errorf("%w: meta page at %d: format version %d, want %d", ErrCorrupt, off, native.Uint32(mb[4:]), boltVersion)
	case native.Uint64(mb[56:]) != h.Sum64():
		return meta{}, fmt.Errorf("%w: meta page at %d: checksum mismatch", ErrCorrupt, off)
	}
	m := meta{pageSize: native.Uint32(mb[8:]), root: native.Uint64(mb[16:]),
		freelist: native.Uint64(mb[32:]), pgid: native.Uint64(mb[40:]), txid: native.Uint64(mb[48:])}
	if m.pageSize < 512 || m.pageSize > 1<<16 || bits.OnesCount32(m.pageSize) != 1 {
		return meta{}, fmt.Errorf("%w: meta page at %d: page size %d", ErrCorrupt, off, m.pageSize)
	}
	return m, nil
}

// chooseMeta picks the meta page bbolt will use: the valid one with the higher
// transaction ID. The page size comes from meta page 0 or, if that is damaged, from
// page 1 at the system's page size, as bbolt finds it.
func (c *fileCheck) chooseMeta() (meta, error) {
	m0, err0 := c.readMeta(0)
	pageSize := int64(m0.pageSize)
	if err0 != nil {
		m1, err1 := c.readMeta(int64(os.Getpagesize()))
		if err1 != nil {
			return meta{}, err0
		}
		pageSize = int64(m1.pageSize)
	}
	m1, err1 := c.readMeta(pageSize)
	if err1 == nil && int64(m1.pageSize) != pageSize {
		err1 = fmt.Errorf("%w: the meta pages disagree on the page size", ErrCorrupt)
	}
	switch {
	case err0 == nil && (err1 != nil || m0.txid >= m1.txid):
		return m0, nil
	case err1 == nil:
		return m1, nil
	}
	return meta{}, err0
}

// page reads page id with its overflow pages, refusing pages outside the file, past
// the high-water mark, reached twice, or not of the wanted type.
func (c *fileCheck) page(id uint64, flag uint16) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, fmt.Errorf("%w: page %d is outside the database (pages 2 to %d)", ErrCorrupt, id, c.hwm-1)
	}
	head, err := c.at(id*c.pageSize, pageHeaderSize)
	if err != nil {
		return nil, err
	}
	overflow := uint64(native.Uint32(head[12:]))
	switch {
	case native.Uint64(head) != id:
		return nil, fmt.Errorf("%w: page %d identifies itself as page %d", ErrCorrupt, id, native.Uint64(head))
	case native.Uint16(head[8:]) != flag:
		return nil, fmt.Errorf("%w: page %d has flags %#x, want %#x", ErrCorrupt, id, native.Uint16(head[8:]), flag)
	case overflow >= c.hwm-id:
		return nil, fmt.Errorf("%w: page %d overflows past the end of the database", ErrCorrupt, id)
	}
	for i := id; i <= id+overflow; i++ {
		if c.seen[i] {
			return nil, fmt.Errorf("%w: page %d is reached twice", ErrCorrupt, i)
		}
		c.seen[i] = true
	}
	return c.at(id*c.pageSize, (overflow+1)*c.pageSize)
}

// bucket checks a bucket's tree: the page root, or the inline page of its value.
func (c *fileCheck) bucket(root uint64, inline []byte) error {
	if root != 0 {
		return c.node(root, nil, nil)
	}
	// An inline bucket is one leaf page inside its parent's value, without buckets.
	if len(inline) < pageHeaderSize || native.Uint16(inline[8:]) != leafPageFlag {
		return fmt.Errorf("%w: an inline bucket is not a leaf page", ErrCorrupt)
	}
	return c.elements(inline, nil, nil, true)
}

// node checks the page id and the subtree under it, whose keys must lie in
// [min, max) (nil: unbounded).
func (c *fileCheck) node(id uint64, min, max []byte) error {
	flag := uint16(leafPageFlag)
	if head, err := c.at(id*c.pageSize, pageHeaderSize); err == nil && id < c.hwm && native.Uint16(head[8:]) == branchPageFlag {
		flag = branchPageFlag
	}
	p, err := c.page(id, flag)
	if err != nil {
		return err
	}
	if flag == leafPageFlag {
		return c.elements(p, min, max, false)
	}
	count := int(native.Uint16(p[10:]))
	if count == 0 {
		return fmt.Errorf("%w: branch page %d is empty", ErrCorrupt, id)
	}
	keys := make([][]byte, count)
	children := make([]uint64, count)
	for i := range count {
		e := pageHeaderSize + i*branchElemSize
		if e+branchElemSize > len(p) {
			return fmt.Errorf("%w: page %d: element %d is past the page", ErrCorrupt, id, i)
		}
		k, err := slice(p, e, native.Uint32(p[e:]), native.Uint32(p[e+4:]))
		if err != nil {
			return fmt.Errorf("%w: page %d: key %d: %v", ErrCorrupt, id, i, err)
		}
		keys[i], children[i] = k, native.Uint64(p[e+8:])
	}
	if err := ordered(keys, min, max); err != nil {
		return fmt.Errorf("%w: page %d: %v", ErrCorrupt, id, err)
	}
	for i, child := range children {
		hi := max
		if i+1 < count {
			hi = keys[i+1]
		}
		if err := c.node(child, keys[i], hi); err != nil {
			return err
		}
	}
	return nil
}

// elements checks a leaf page: elements and their keys and values inside it, keys
// in order, and every nested bucket.
func (c *fileCheck) elements(p []byte, min, max []byte, inline bool) error {
	count := int(native.Uint16(p[10:]))
	keys := make([][]byte, 0, count)
	var buckets [][]byte
	for i := range count {
		e := pageHeaderSize + i*leafElemSize
		if e+leafElemSize > len(p) {
			return fmt.Errorf("%w: leaf element %d is past its page", ErrCorrupt, i)
		}
		pos, ksize, vsize := native.Uint32(p[e+4:]), native.Uint32(p[e+8:]), native.Uint32(p[e+12:])
		kv, err := slice(p, e, pos, ksize+vsize)
		if err != nil || ksize+vsize < ksize {
			return fmt.Errorf("%w: leaf element %d: key and value are past the page", ErrCorrupt, i)
		}
		keys = append(keys, kv[:ksize])
		if native.Uint32(p[e:])&bucketLeafFlag != 0 {
			if inline {
				return fmt.Errorf("%w: an inline bucket holds a bucket", ErrCorrupt)
			}
			buckets = append(buckets, kv[ksize:])
		}
	}
	if err := ordered(keys, min, max); err != nil {
		return fmt.Errorf("%w: leaf: %v", ErrCorrupt, err)
	}
	for _, v := range buckets {
		if len(v) < bucketValueSize {
			return fmt.Errorf("%w: a bucket value of %d bytes", ErrCorrupt, len(v))
		}
		if err := c.bucket(native.Uint64(v), v[bucketValueSize:]); err != nil {
			return err
		}
	}
	return nil
}

// slice returns b[at+pos : at+pos+n], or an error if that is not inside b.
func slice(b []byte, at int, pos, n uint32) ([]byte, error) {
	start, end := uint64(at)+uint64(pos), uint64(at)+uint64(pos)+uint64(n)
	if end > uint64(len(b)) {
		return nil, errors.New("past the end of its page")
	}
	return b[start:end], nil
}

// ordered checks that keys strictly increase and lie in [min, max).
func ordered(keys [][]byte, min, max []byte) error {
	for i, k := range keys {
		switch {
		case i == 0 && min != nil && bytes.Compare(k, min) < 0:
			return fmt.Errorf("key %x is below its parent's %x", k, min)
		case i > 0 && bytes.Compare(keys[i-1], k) >= 0:
			return fmt.Errorf("key %x does not follow %x", k, keys[i-1])
		case max != nil && bytes.Compare(k, max) >= 0:
			return fmt.Errorf("key %x is not below its parent's next key %x", k, max)
		}
	}
	return nil
}

// freelist checks the free page list: a freelist page whose IDs are pages of the
// file that the tree does not use. bbolt would hand a listed page that is in use to
// the next write, which would then overwrite live data.
func (c *fileCheck) freelist(id uint64) error {
	if id == noFreelist {
		return nil // bbolt rebuilds the list from the tree checked above
	}
	p, err := c.page(id, freelistFlag)
	if err != nil {
		return err
	}
	n, at := uint64(native.Uint16(p[10:])), uint64(pageHeaderSize)
	if n == 0xFFFF {
		n, at = native.Uint64(p[pageHeaderSize:]), pageHeaderSize+8
	}
	if n > (uint64(len(p))-at)/8 {
		return fmt.Errorf("%w: the freelist counts %d pages, more than its page holds", ErrCorrupt, n)
	}
	listed := map[uint64]bool{}
	for i := range n {
		free := native.Uint64(p[at+8*i:])
		if free < 2 || free >= c.hwm || c.seen[free] || listed[free] {
			return fmt.Errorf("%w: the freelist lists page %d, which is not a free page", ErrCorrupt, free)
		}
		listed[free] = true
	}
	return nil
}
