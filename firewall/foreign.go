package firewall

import (
	"fmt"
	"strconv"

	"github.com/google/nftables"
)

// ForeignChain is a base chain of a table that is not ctnet's.
type ForeignChain struct {
	Family, Table, Chain string
	Hook                 string
}

func (f ForeignChain) String() string {
	return fmt.Sprintf("table %s %s chain %s (hook %s, policy drop)", f.Family, f.Table, f.Chain, f.Hook)
}

// ForeignDropChains returns the base chains of other tables that see forwarded
// traffic and drop what they do not accept: any of them can drop what ctnet accepts,
// since every base chain at a hook must accept a packet for it to pass.
func ForeignDropChains(c *nftables.Conn) ([]ForeignChain, error) {
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	var out []ForeignChain
	for _, ch := range chains {
		if ch.Table == nil || ch.Hooknum == nil || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			continue
		}
		if ch.Table.Name == TableName && (ch.Table.Family == nftables.TableFamilyINet || ch.Table.Family == nftables.TableFamilyBridge) {
			continue
		}
		fam := FamilyName(ch.Table.Family)
		var hook string
		switch {
		case *ch.Hooknum == *nftables.ChainHookForward && ch.Table.Family != nftables.TableFamilyNetdev:
			hook = "forward"
		case *ch.Hooknum == *nftables.ChainHookPrerouting && ch.Table.Family == nftables.TableFamilyBridge:
			hook = "prerouting"
		default:
			continue
		}
		out = append(out, ForeignChain{Family: fam, Table: ch.Table.Name, Chain: ch.Name, Hook: hook})
	}
	return out, nil
}

// FamilyName is nft's name of a table family, or its number when nft has none. (A
// switch, not a map: every command would build the map at start.)
func FamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return strconv.Itoa(int(f))
}
