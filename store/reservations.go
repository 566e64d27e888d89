package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"iter"
	"net/netip"
)

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
	return t.bucket(bCursors).Put(cursorKey(networkID, ip.Is6()), ip.AsSlice())
}

// cursorKey is where a network's cursor of one family is: its ID for IPv4 (as
// stores before IPv6 have it), the ID and "/6" for IPv6.
func cursorKey(networkID string, ipv6 bool) []byte {
	if ipv6 {
		return []byte(networkID + "/6")
	}
	return []byte(networkID)
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

// Cursor is the last address of a family (IPv6 if ipv6) allocated on the network
// (invalid if none).
func (t *Tx) Cursor(networkID string, ipv6 bool) netip.Addr {
	b := t.bucket(bCursors)
	if b == nil {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(b.Get(cursorKey(networkID, ipv6)))
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

// Veths yields every reserved host veth name and its container ID, in name order,
// reading only as far as the caller goes: the fast path's search stops at the
// first veth that carries the program, where a map of a thousand would cost it
// half a millisecond. The bucket must not change while it is read.
func (t *Tx) Veths() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		b := t.bucket(bVeths)
		if b == nil {
			return
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil && yield(string(k), string(v)); k, v = c.Next() {
		}
	}
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
