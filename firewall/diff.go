package firewall

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Diff compares the elements in the kernel's tables with the state. It describes, one
// line each, what the kernel holds that the state does not (extra) and the reverse
// (missing); a missing table is one line of missing.
func Diff(c *nftables.Conn, s State) (extra, missing []string, err error) {
	want, err := s.elements()
	if err != nil {
		return nil, nil, err
	}
	for _, tbl := range []struct {
		t     *nftables.Table
		specs []setSpec
		want  map[string][]nftables.SetElement
	}{{inetTable, inetSets, want.inet}, {bridgeTable, bridgeSets, want.bridge}} {
		fam := FamilyName(tbl.t.Family)
		// GetSetElements does not wrap its errors: a missing table must be found
		// before its sets are read.
		if ok, err := tableExists(c, tbl.t); err != nil {
			return nil, nil, err
		} else if !ok {
			missing = append(missing, fmt.Sprintf("table %s %s", fam, TableName))
			continue
		}
		for _, spec := range tbl.specs {
			have, err := c.GetSetElements(newSet(tbl.t, spec))
			if errors.Is(err, unix.ENOENT) {
				missing = append(missing, fmt.Sprintf("table %s %s or its set %s", fam, TableName, spec.name))
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("read set %s: %w", spec.name, err)
			}
			haveKeys := map[string]nftables.SetElement{}
			for _, e := range have {
				if e.IntervalEnd {
					continue
				}
				haveKeys[elementKey(e)] = e
			}
			wantKeys := map[string]nftables.SetElement{}
			for _, e := range tbl.want[spec.name] {
				wantKeys[elementKey(e)] = e
			}
			for k, e := range haveKeys {
				if _, ok := wantKeys[k]; !ok {
					extra = append(extra, fmt.Sprintf("element %s of set %s in table %s %s", describe(spec, e), spec.name, fam, TableName))
				}
			}
			for k, e := range wantKeys {
				if _, ok := haveKeys[k]; !ok {
					missing = append(missing, fmt.Sprintf("element %s of set %s in table %s %s", describe(spec, e), spec.name, fam, TableName))
				}
			}
		}
	}
	slices.Sort(extra)
	slices.Sort(missing)
	return extra, missing, nil
}

func elementKey(e nftables.SetElement) string {
	return hex.EncodeToString(e.Key) + "-" + hex.EncodeToString(e.KeyEnd) + ":" + hex.EncodeToString(e.Val) + " " + e.Comment
}

// describe prints an element as nft would: components joined by " . ".
func describe(spec setSpec, e nftables.SetElement) string {
	out := describeValue(spec.key, e.Key)
	if len(e.KeyEnd) > 0 {
		out += " - " + describeValue(spec.key, e.KeyEnd)
	}
	if spec.data != nil {
		out += " : " + describeValue(spec.data, e.Val)
	}
	if e.Comment != "" {
		out += fmt.Sprintf(" comment %q", e.Comment)
	}
	return out
}

func describeValue(types []nftables.SetDatatype, b []byte) string {
	var parts []string
	for _, t := range types {
		size := int(t.Bytes)
		if size > len(b) {
			// A short value (another tool's element): the rest as it is.
			parts = append(parts, hex.EncodeToString(b))
			break
		}
		v := b[:size]
		switch t.Name {
		case nftables.TypeIFName.Name:
			parts = append(parts, fmt.Sprintf("%q", strings.TrimRight(string(v), "\x00")))
		case nftables.TypeIPAddr.Name:
			parts = append(parts, netip.AddrFrom4([4]byte(v)).String())
		case nftables.TypeIP6Addr.Name:
			parts = append(parts, netip.AddrFrom16([16]byte(v)).String())
		case nftables.TypeInetService.Name:
			parts = append(parts, fmt.Sprint(binary.BigEndian.Uint16(v)))
		case nftables.TypeInetProto.Name:
			name, ok := map[byte]string{6: "tcp", 17: "udp", 132: "sctp"}[v[0]]
			if !ok {
				name = fmt.Sprint(v[0])
			}
			parts = append(parts, name)
		case nftables.TypeEtherAddr.Name:
			parts = append(parts, net.HardwareAddr(v).String())
		default:
			parts = append(parts, hex.EncodeToString(v))
		}
		if len(types) > 1 {
			size += (4 - size%4) % 4
		}
		b = b[min(size, len(b)):]
	}
	return strings.Join(parts, " . ")
}
