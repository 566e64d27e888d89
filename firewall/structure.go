package firewall

import (
	"fmt"

	"github.com/google/nftables"
)

// Structure describes, one line each, how ctnet's tables that exist differ from
// their fixed structure: a chain missing, or a chain with another number of rules
// (the rules of ctnet's chains are all ctnet's). Diff compares elements only; a rule deleted by hand (`nft
// flush chain`, `nft delete rule`) leaves them all in place. A missing table is
// Diff's to report.
func Structure(c *nftables.Conn) ([]string, error) {
	var missing []string
	for _, tbl := range []struct {
		t      *nftables.Table
		chains []chainSpec
		rules  []ruleSpec
	}{{inetTable, inetChains, inetRules()}, {bridgeTable, bridgeChains, bridgeRules()}} {
		if ok, err := tableExists(c, tbl.t); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		chains, err := c.ListChainsOfTableFamily(tbl.t.Family)
		if err != nil {
			return nil, fmt.Errorf("list firewall chains: %w", err)
		}
		have := map[string]*nftables.Chain{}
		for _, ch := range chains {
			if ch.Table.Name == TableName {
				have[ch.Name] = ch
			}
		}
		fam := FamilyName(tbl.t.Family)
		for _, cs := range tbl.chains {
			ch, ok := have[cs.name]
			if !ok {
				missing = append(missing, fmt.Sprintf("chain %s of table %s %s", cs.name, fam, TableName))
				continue
			}
			want := 0
			for _, r := range tbl.rules {
				if r.chain == cs.name {
					want++
				}
			}
			rules, err := c.GetRules(tbl.t, ch)
			if err != nil {
				return nil, fmt.Errorf("list rules of firewall chain %s: %w", cs.name, err)
			}
			if len(rules) != want {
				missing = append(missing, fmt.Sprintf("rules of chain %s in table %s %s (%d there, want %d)", cs.name, fam, TableName, len(rules), want))
			}
		}
	}
	return missing, nil
}
