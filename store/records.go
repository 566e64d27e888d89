package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

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

// NetworkNamed returns the network with this name, and no other: a name that is a
// prefix of another network's ID is still free.
func (t *Tx) NetworkNamed(name string) (*Network, error) {
	return get[Network](t.bucket(bNetworks), name)
}

// Network returns the network with this name or ID (or unique ID prefix).
func (t *Tx) Network(ref string) (*Network, error) {
	n, err := t.NetworkNamed(ref)
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
	if err := t.bucket(bCursors).Delete(cursorKey(n.ID, false)); err != nil {
		return err
	}
	return t.bucket(bCursors).Delete(cursorKey(n.ID, true))
}

// ContainerNamed returns the container with this name, and no other: a name that is
// a prefix of other containers' IDs is still free.
func (t *Tx) ContainerNamed(name string) (*Container, error) {
	return get[Container](t.bucket(bContainers), name)
}

// Container returns the container with this name, ID or unique ID prefix.
func (t *Tx) Container(ref string) (*Container, error) {
	c, err := t.ContainerNamed(ref)
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
