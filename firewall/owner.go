package firewall

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
)

// ownerKey is the key of the owner set's one element; the owner is its comment,
// since google/nftables cannot write a comment on the table itself.
const ownerKey = "root"

// MaxOwnerLen is the longest owner nftables keeps: an element comment is user data
// of at most 256 bytes, with a two-byte header and a terminating NUL.
const MaxOwnerLen = 253

// Owner reports the owner recorded in ctnet's inet table, and whether the table
// exists at all. Tables that predate the owner set have an owner of "".
func Owner(c *nftables.Conn) (owner string, present bool, err error) {
	els, err := c.GetSetElements(newSet(inetTable, ownerSet))
	if err != nil {
		// GetSetElements does not wrap its errors, so a missing table or set cannot be
		// told from other failures by the error: they are looked up (the rare path).
		if ok, terr := tableExists(c, inetTable); terr != nil || !ok {
			return "", false, terr
		}
		sets, serr := c.GetSets(inetTable)
		if serr != nil {
			return "", true, fmt.Errorf("read firewall owner: %w", serr)
		}
		if !slices.ContainsFunc(sets, func(s *nftables.Set) bool { return s.Name == setOwner }) {
			return "", true, nil
		}
		return "", true, fmt.Errorf("read firewall owner: %w", err)
	}
	for _, e := range els {
		if string(e.Key) == string(ifname(ownerKey)) {
			return e.Comment, true, nil
		}
	}
	return "", true, nil
}

// Claim records owner in ctnet's inet table, replacing any owner recorded before,
// in one batch. The table must exist.
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
