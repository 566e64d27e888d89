package firewall

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// Entry is one element of one of ctnet's sets, as nft prints it.
type Entry struct {
	Table   string `json:"table"`
	Set     string `json:"set"`
	Element string `json:"element"`
}

func (e Entry) String() string { return fmt.Sprintf("%s %s: %s", e.Table, e.Set, e.Element) }

// Mentions reports whether one of the element's components is exactly s (an address,
// an interface name, a subnet's first address).
func (e Entry) Mentions(s string) bool {
	for _, f := range strings.Fields(e.Element) {
		if strings.Trim(f, `"`) == s {
			return true
		}
	}
	return false
}

// List returns every element of ctnet's tables; missing tables list as empty.
func List(c *nftables.Conn) ([]Entry, error) {
	var out []Entry
	for _, tbl := range []struct {
		t     *nftables.Table
		specs []setSpec
	}{{inetTable, inetSets}, {bridgeTable, bridgeSets}} {
		exists, err := tableExists(c, tbl.t)
		if err != nil {
			return nil, err
		}
		if !exists {
			continue
		}
		for _, spec := range tbl.specs {
			els, err := c.GetSetElements(newSet(tbl.t, spec))
			if err != nil {
				return nil, fmt.Errorf("read set %s: %w", spec.name, err)
			}
			for _, e := range els {
				if e.IntervalEnd {
					continue
				}
				out = append(out, Entry{Table: FamilyName(tbl.t.Family) + " " + TableName, Set: spec.name, Element: describe(spec, e)})
			}
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}
