package firewall

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// containerDNSTable is the table in a container's own namespace that sends its DNS
// queries to the embedded server; it goes with the namespace.
var containerDNSTable = &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}

// RedirectDNS makes queries to addr:53 inside a container's namespace reach the
// embedded DNS server's sockets at addr:udpPort and addr:tcpPort, as Docker does for
// 127.0.0.11: the server keeps off port 53, so the container's own programs may
// still serve DNS on every address. c must be bound to the container's namespace.
// Replies are translated back by conntrack.
func RedirectDNS(c *nftables.Conn, addr netip.Addr, udpPort, tcpPort uint16) error {
	if !addr.Is4() {
		return fmt.Errorf("redirect dns: %s is not an IPv4 address", addr)
	}
	if err := replaceTable(c, containerDNSTable); err != nil {
		return err
	}
	accept := nftables.ChainPolicyAccept
	chain := c.AddChain(&nftables.Chain{
		Name: "output", Table: containerDNSTable, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput,
		Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	})
	for _, r := range []struct {
		proto byte
		port  uint16
	}{{unix.IPPROTO_UDP, udpPort}, {unix.IPPROTO_TCP, tcpPort}} {
		c.AddRule(&nftables.Rule{Table: containerDNSTable, Chain: chain, Exprs: join(
			one(load(expr.PayloadBaseNetworkHeader, ipv4DaddrOffset, 4, reg1), cmp(expr.CmpOpEq, reg1, addr.AsSlice())),
			one(meta(expr.MetaKeyL4PROTO, reg1), cmp(expr.CmpOpEq, reg1, []byte{r.proto})),
			one(load(expr.PayloadBaseTransportHeader, transportDportOffset, 2, reg1), cmp(expr.CmpOpEq, reg1, be16(53))),
			one(&expr.Immediate{Register: reg1, Data: addr.AsSlice()}, &expr.Immediate{Register: reg9, Data: be16(r.port)}),
			one(&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegAddrMax: reg1,
				RegProtoMin: reg9, RegProtoMax: reg9, Specified: true}),
		)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("redirect dns to the embedded server: %w", err)
	}
	return nil
}
