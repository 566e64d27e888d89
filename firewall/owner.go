package firewall

import (
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
)

// The owner set's elements record what the tables are, as comments, since
// google/nftables cannot write a comment on the table itself: ownerKey's comment is
// the root managing them, rulesKey's the version of the rules they were built with.
const (
	ownerKey = "root"
	rulesKey = "rules"
)

// rulesVersion names the fixed structure (sets, chains, rules) this ctnet builds.
// Changes only ever touch elements, so tables built by an older ctnet keep its rules
// — a security fix to a rule would never reach a running host — until something
// notices the version differs and rebuilds them. Derived from the rendered structure,
// it changes with every rule without anyone remembering to bump it. Computed on first
// use, not at start: rendering the rules is a fifth of ctnet's package initialisation,
// and most commands never compare the version. FNV, not a cryptographic hash: it
// tells versions apart, and crypto/sha256 would bring FIPS packages that every
// command initialises.
var rulesVersion = sync.OnceValue(func() string {
	var structure strings.Builder
	renderTable(&structure, "inet", inetSets, inetChains, inetRules(), nil)
	renderTable(&structure, "bridge", bridgeSets, bridgeChains, bridgeRules(), nil)
	h := fnv.New64a()
	h.Write([]byte(structure.String()))
	return hex.EncodeToString(h.Sum(nil)[:6])
})

// MaxOwnerLen is the longest owner nftables keeps: an element comment is user data
// of at most 256 bytes, with a two-byte header and a terminating NUL.
const MaxOwnerLen = 253

// Record is what ctnet's inet table says about itself.
type Record struct {
	Present bool   // the table exists
	Owner   string // the root managing it; "" in tables that predate the record
	Current bool   // built with this ctnet's rules; tables of an older one need a Rebuild
}

// ReadRecord reads the record of ctnet's inet table, in one round trip when the table
// and its owner set exist.
func ReadRecord(c *nftables.Conn) (Record, error) {
	els, err := c.GetSetElements(newSet(inetTable, ownerSet))
	if err != nil {
		// GetSetElements does not wrap its errors, so a missing table or set cannot be
		// told from other failures by the error: they are looked up (the rare path).
		if ok, terr := tableExists(c, inetTable); terr != nil || !ok {
			return Record{}, terr
		}
		sets, serr := c.GetSets(inetTable)
		if serr != nil {
			return Record{Present: true}, fmt.Errorf("read firewall owner: %w", serr)
		}
		if !slices.ContainsFunc(sets, func(s *nftables.Set) bool { return s.Name == setOwner }) {
			return Record{Present: true}, nil
		}
		return Record{Present: true}, fmt.Errorf("read firewall owner: %w", err)
	}
	r := Record{Present: true}
	for _, e := range els {
		switch string(e.Key) {
		case string(ifname(ownerKey)):
			r.Owner = e.Comment
		case string(ifname(rulesKey)):
			r.Current = e.Comment == rulesVersion()
		}
	}
	return r, nil
}

// Claim records owner in ctnet's inet table, replacing any owner recorded before,
// in one batch. The table must exist. It records the rules as this ctnet's, so a
// caller taking over an older ctnet's tables rebuilds them as well.
func Claim(c *nftables.Conn, owner string) error {
	els, err := State{Owner: owner}.elements()
	if err != nil {
		return err
	}
	set := newSet(inetTable, ownerSet)
	// Adding before deleting makes the delete valid whether or not the set existed.
	if err := c.AddSet(set, nil); err != nil {
		return fmt.Errorf("record firewall owner: %w", err)
	}
	c.DelSet(set)
	if err := c.AddSet(set, els.inet[setOwner]); err != nil {
		return fmt.Errorf("record firewall owner: %w", err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("record firewall owner: %w", err)
	}
	return nil
}
