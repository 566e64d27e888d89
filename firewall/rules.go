package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The tables' fixed structure: sets, chains and rules. Each rule carries the nft text
// that means the same thing, so Render and the netlink programming cannot drift apart
// unnoticed (a test loads both into namespaces and compares what nft lists).

// Registers: a concatenation is laid out in consecutive 32-bit registers starting at
// reg 1 (NFT_REG_1 is the same storage as NFT_REG32_00, numbered 8).
const (
	reg1  = unix.NFT_REG_1
	reg9  = 9 // NFT_REG32_01
	reg10 = 10
	reg12 = 12 // NFT_REG32_04, right after a 16-byte ifname or IPv6 address in reg 1
	reg13 = 13
)

// Set names, as they appear in `nft list table`.
const (
	setBridges     = "bridges"      // every ctnet bridge
	setSameBridge  = "same_bridge"  // bridge . bridge, for traffic routed back where it came from
	setInternal    = "internal"     // bridges of --internal networks
	setNATBridges  = "nat_bridges"  // bridges of masquerading networks: closed to routed traffic from outside
	setSubnets     = "subnets"      // subnet . bridge of every network
	setMasqSubnets = "masq_subnets" // subnet . bridge of masquerading networks
	mapPorts       = "ports"        // host ip . proto . port → container ip . port
	mapPortsAny    = "ports_any"    // proto . port → container ip . port, for every host address
	setPorts       = "ports"        // (bridge table) container-facing bridge ports
	setPortMACs    = "port_macs"    // (bridge table) port . MAC a container may send from
	setPortIPs     = "port_ips"     // (bridge table) port . IPv4 address a container may send from
	setNoICC       = "no_icc"       // bridges (inet) and their ports (bridge) whose containers cannot reach each other
	setOwner       = "owner"        // one element, "root", whose comment is the ctnet root managing the tables
	// The same for IPv6.
	setSubnets6     = "subnets6"
	setMasqSubnets6 = "masq_subnets6"
	mapPorts6       = "ports6"
	mapPortsAny6    = "ports_any6" // proto . port → container ip . port, for every host IPv6 address
	setPortIPs6     = "port_ips6"  // (bridge table) port . IPv6 address, link-local included
)

// setUnmasked holds range . bridge: the peers a masquerading network exchanges
// traffic with without NAT, both ways (its nonMasqueradeCIDRs).
const setUnmasked = "unmasqueraded"

type setSpec struct {
	name     string
	key      []nftables.SetDatatype
	data     []nftables.SetDatatype // a map when set
	interval bool
}

func (s setSpec) keyType() nftables.SetDatatype { return concat(s.key) }

func concat(types []nftables.SetDatatype) nftables.SetDatatype {
	if len(types) == 1 {
		return types[0]
	}
	return nftables.MustConcatSetType(types...)
}

var inetSets = []setSpec{
	{name: setBridges, key: []nftables.SetDatatype{nftables.TypeIFName}},
	{name: setSameBridge, key: []nftables.SetDatatype{nftables.TypeIFName, nftables.TypeIFName}},
	{name: setInternal, key: []nftables.SetDatatype{nftables.TypeIFName}},
	{name: setNATBridges, key: []nftables.SetDatatype{nftables.TypeIFName}},
	{name: setNoICC, key: []nftables.SetDatatype{nftables.TypeIFName}},
	{name: setSubnets, key: []nftables.SetDatatype{nftables.TypeIPAddr, nftables.TypeIFName}, interval: true},
	{name: setMasqSubnets, key: []nftables.SetDatatype{nftables.TypeIPAddr, nftables.TypeIFName}, interval: true},
	{name: setUnmasked, key: []nftables.SetDatatype{nftables.TypeIPAddr, nftables.TypeIFName}, interval: true},
	{name: mapPorts,
		key:  []nftables.SetDatatype{nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService},
		data: []nftables.SetDatatype{nftables.TypeIPAddr, nftables.TypeInetService}},
	{name: mapPortsAny,
		key:  []nftables.SetDatatype{nftables.TypeInetProto, nftables.TypeInetService},
		data: []nftables.SetDatatype{nftables.TypeIPAddr, nftables.TypeInetService}},
	{name: setSubnets6, key: []nftables.SetDatatype{nftables.TypeIP6Addr, nftables.TypeIFName}, interval: true},
	{name: setMasqSubnets6, key: []nftables.SetDatatype{nftables.TypeIP6Addr, nftables.TypeIFName}, interval: true},
	{name: mapPorts6,
		key:  []nftables.SetDatatype{nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService},
		data: []nftables.SetDatatype{nftables.TypeIP6Addr, nftables.TypeInetService}},
	{name: mapPortsAny6,
		key:  []nftables.SetDatatype{nftables.TypeInetProto, nftables.TypeInetService},
		data: []nftables.SetDatatype{nftables.TypeIP6Addr, nftables.TypeInetService}},
	ownerSet,
}

var ownerSet = setSpec{name: setOwner, key: []nftables.SetDatatype{nftables.TypeIFName}}

var bridgeSets = []setSpec{
	{name: setPorts, key: []nftables.SetDatatype{nftables.TypeIFName}},
	{name: setPortMACs, key: []nftables.SetDatatype{nftables.TypeIFName, nftables.TypeEtherAddr}},
	{name: setPortIPs, key: []nftables.SetDatatype{nftables.TypeIFName, nftables.TypeIPAddr}},
	{name: setPortIPs6, key: []nftables.SetDatatype{nftables.TypeIFName, nftables.TypeIP6Addr}},
	{name: setNoICC, key: []nftables.SetDatatype{nftables.TypeIFName}},
}

type chainSpec struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority int32
	prioText string // nft's name for the priority
}

var inetChains = []chainSpec{
	{name: "raw", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting, priority: -300, prioText: "raw"},
	{name: "prerouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPrerouting, priority: -100, prioText: "dstnat"},
	{name: "output", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookOutput, priority: -100, prioText: "-100"},
	{name: "publish"},
	{name: "postrouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, priority: 100, prioText: "srcnat"},
	{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, priority: 0, prioText: "filter"},
	{name: "between_networks"},
}

var bridgeChains = []chainSpec{
	{name: "prerouting", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting, priority: -200, prioText: "filter"},
	{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, priority: -200, prioText: "filter"},
}

type ruleSpec struct {
	chain   string
	text    string
	comment string
	exprs   []expr.Any
	// listedOnly marks a rule nft lists as text but cannot read back: a raw payload
	// (a neighbour discovery field, which nft has no name for) looked up in a set of
	// typed keys. Render prints it as nft lists it.
	listedOnly bool
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func be16(v uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, v)
	return b
}

func meta(key expr.MetaKey, reg uint32) expr.Any { return &expr.Meta{Key: key, Register: reg} }

func load(base expr.PayloadBase, offset, length, reg uint32) expr.Any {
	return &expr.Payload{OperationType: expr.PayloadLoad, Base: base, Offset: offset, Len: length, DestRegister: reg}
}

func cmp(op expr.CmpOp, reg uint32, data []byte) expr.Any {
	return &expr.Cmp{Op: op, Register: reg, Data: data}
}

func lookup(set string, reg uint32) expr.Any { return &expr.Lookup{SourceRegister: reg, SetName: set} }

func notIn(set string, reg uint32) expr.Any {
	return &expr.Lookup{SourceRegister: reg, SetName: set, Invert: true}
}

func mapLookup(set string) expr.Any {
	return &expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: set}
}

func verdict(kind expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: kind} }

func jump(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

func ipv4Only() []expr.Any {
	return []expr.Any{meta(expr.MetaKeyNFPROTO, reg1), cmp(expr.CmpOpEq, reg1, []byte{unix.NFPROTO_IPV4})}
}

func ipv6Only() []expr.Any {
	return []expr.Any{meta(expr.MetaKeyNFPROTO, reg1), cmp(expr.CmpOpEq, reg1, []byte{unix.NFPROTO_IPV6})}
}

// ctBits matches packets whose conntrack key has any of mask's bits set.
func ctBits(key expr.CtKey, mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: key, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(mask), Xor: native32(0)},
		cmp(expr.CmpOpNeq, reg1, native32(0)),
	}
}

const (
	ctStatusDNAT         = 1 << 5 // IPS_DST_NAT
	ctStateEstablished   = 1 << 1
	ctStateRelated       = 1 << 2
	rtnLocal             = 2 // RTN_LOCAL
	ipv4SaddrOffset      = 12
	ipv4DaddrOffset      = 16
	ipv6SaddrOffset      = 8
	ipv6DaddrOffset      = 24
	udpDportDHCPv6Server = 547
	transportDportOffset = 2
	etherSaddrOffset     = 6
	arpSenderEtherOffset = 8
	arpSenderIPOffset    = 14
	etherTypeIPv4        = 0x0800
	etherTypeARP         = 0x0806
	etherTypeIPv6        = 0x86dd
	ndRouterSolicit      = 133
	ndNeighborSolicit    = 135
	ndNeighborAdvert     = 136
	ipv6PayloadLenOffset = 4
	ipv6NextHeaderOffset = 6
	ndTargetOffset       = 8  // in a neighbour solicitation or advertisement
	ndNoOptionsLen       = 24 // ICMPv6 length of either without options
	ndOneOptionLen       = 32 // with one link-layer address option
	ndOptionOffset       = 24
	ndOptionLLAddrOffset = 26
	ndOptSourceLLAddr    = 1
	ndOptTargetLLAddr    = 2
	ndRouterAdvert       = 134
	ndRedirect           = 137
	mldListenerQuery     = 130
	mldListenerReport    = 131
	mldListenerDone      = 132
	mld2ListenerReport   = 143
)

// protocol matches the frame's ethertype as the kernel parsed it (meta protocol),
// which is what nft generates for a bridge-family dependency.
func protocol(etherType uint16) []expr.Any {
	return one(meta(expr.MetaKeyPROTOCOL, reg1), cmp(expr.CmpOpEq, reg1, be16(etherType)))
}

// icmpv6Type matches an ICMPv6 message type, after protocol(etherTypeIPv6).
func icmpv6Type(typ byte) []expr.Any {
	return one(
		meta(expr.MetaKeyL4PROTO, reg1), cmp(expr.CmpOpEq, reg1, []byte{unix.IPPROTO_ICMPV6}),
		load(expr.PayloadBaseTransportHeader, 0, 1, reg1), cmp(expr.CmpOpEq, reg1, []byte{typ}),
	)
}

// ndGuard is the rules that hold a container's neighbour solicitations (135) and
// advertisements (136) to its own link-layer address, and its advertisements to its
// own addresses: a forged one would point another host's neighbour entry for an
// address at the sender. The message must come without extension headers (so its
// length is the IPv6 payload length) and carry at most one option, its own
// link-layer address (option opt) at the start; an advertisement's target must be
// one of the port's addresses. Linux sends them so.
func ndGuard(typ byte, name string, opt byte) []ruleSpec {
	is := func() []expr.Any { return join(protocol(etherTypeIPv6), icmpv6Type(typ)) }
	rules := []ruleSpec{
		{chain: "prerouting", text: "icmpv6 type " + name + " ip6 nexthdr != ipv6-icmp drop",
			exprs: join(is(), one(load(expr.PayloadBaseNetworkHeader, ipv6NextHeaderOffset, 1, reg1),
				cmp(expr.CmpOpNeq, reg1, []byte{unix.IPPROTO_ICMPV6}), verdict(expr.VerdictDrop)))},
		{chain: "prerouting", text: fmt.Sprintf("icmpv6 type %s ip6 length != %d ip6 length != %d drop", name, ndNoOptionsLen, ndOneOptionLen),
			exprs: join(is(), one(load(expr.PayloadBaseNetworkHeader, ipv6PayloadLenOffset, 2, reg1),
				cmp(expr.CmpOpNeq, reg1, be16(ndNoOptionsLen)), cmp(expr.CmpOpNeq, reg1, be16(ndOneOptionLen)), verdict(expr.VerdictDrop)))},
		{chain: "prerouting", text: fmt.Sprintf("icmpv6 type %s ip6 length %d @th,%d,16 != 0x%02x01 drop", name, ndOneOptionLen, ndOptionOffset*8, opt),
			exprs: join(is(), one(load(expr.PayloadBaseNetworkHeader, ipv6PayloadLenOffset, 2, reg1), cmp(expr.CmpOpEq, reg1, be16(ndOneOptionLen)),
				load(expr.PayloadBaseTransportHeader, ndOptionOffset, 2, reg1), cmp(expr.CmpOpNeq, reg1, []byte{opt, 1}), verdict(expr.VerdictDrop)))},
		{chain: "prerouting", text: fmt.Sprintf("icmpv6 type %s ip6 length %d iifname . @th,%d,48 != @%s drop", name, ndOneOptionLen, ndOptionLLAddrOffset*8, setPortMACs),
			listedOnly: true,
			exprs: join(is(), one(load(expr.PayloadBaseNetworkHeader, ipv6PayloadLenOffset, 2, reg1), cmp(expr.CmpOpEq, reg1, be16(ndOneOptionLen)),
				meta(expr.MetaKeyIIFNAME, reg1), load(expr.PayloadBaseTransportHeader, ndOptionLLAddrOffset, 6, reg12),
				notIn(setPortMACs, reg1), verdict(expr.VerdictDrop)))},
	}
	if typ == ndNeighborAdvert {
		rules = append(rules, ruleSpec{chain: "prerouting", text: fmt.Sprintf("icmpv6 type %s iifname . @th,%d,128 != @%s drop", name, ndTargetOffset*8, setPortIPs6),
			comment: "a container advertises only its own addresses", listedOnly: true,
			exprs: join(is(), one(meta(expr.MetaKeyIIFNAME, reg1), load(expr.PayloadBaseTransportHeader, ndTargetOffset, 16, reg12),
				notIn(setPortIPs6, reg1), verdict(expr.VerdictDrop)))})
	}
	return rules
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func one(e ...expr.Any) []expr.Any { return e }

func fibDaddrLocal() []expr.Any {
	return one(
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		cmp(expr.CmpOpEq, reg1, native32(rtnLocal)),
	)
}

func dnatFromMap() expr.Any {
	return &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegAddrMax: reg1, RegProtoMin: reg9, RegProtoMax: reg9, Specified: true}
}

// dnat6FromMap is dnatFromMap for a map to an IPv6 address (four registers) and a
// port.
func dnat6FromMap() expr.Any {
	return &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: reg1, RegAddrMax: reg1, RegProtoMin: reg12, RegProtoMax: reg12, Specified: true}
}

// linkLocalSource matches an IPv6 source in fe80::/10, after protocol(etherTypeIPv6).
func linkLocalSource() []expr.Any {
	mask, want := make([]byte, 16), make([]byte, 16)
	mask[0], mask[1], want[0], want[1] = 0xff, 0xc0, 0xfe, 0x80
	return one(
		load(expr.PayloadBaseNetworkHeader, ipv6SaddrOffset, 16, reg1),
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
		cmp(expr.CmpOpEq, reg1, want),
	)
}

// The rule lists are built on first use, not at start: every ctnet command loads
// this package, and few build or compare tables.
var inetRules = sync.OnceValue(func() []ruleSpec {
	return []ruleSpec{
		// Bridges have route_localnet on, for 127.0.0.1 publishing; without this rule a
		// container that routes 127.0.0.1 to its gateway reaches the host's loopback
		// services (CVE-2020-8558). It runs before conntrack, so replies to the host's own
		// connections to a 127.0.0.1 published port, whose destination becomes 127.0.0.1
		// only when conntrack undoes the masquerade, still pass.
		{chain: "raw", text: `iifname != "lo" ip daddr 127.0.0.0/8 drop`,
			comment: "loopback addresses come only from the host itself",
			exprs: join(one(meta(expr.MetaKeyIIFNAME, reg1), cmp(expr.CmpOpNeq, reg1, ifname("lo"))), ipv4Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv4DaddrOffset, 1, reg1),
				cmp(expr.CmpOpEq, reg1, []byte{127}), verdict(expr.VerdictDrop)))},
		// IPv6 has no route_localnet and the kernel drops ::1 from other interfaces
		// itself; the rule says so here too, whatever a later kernel does.
		{chain: "raw", text: `iifname != "lo" ip6 daddr ::1 drop`,
			exprs: join(one(meta(expr.MetaKeyIIFNAME, reg1), cmp(expr.CmpOpNeq, reg1, ifname("lo"))), ipv6Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv6DaddrOffset, 16, reg1),
				cmp(expr.CmpOpEq, reg1, netip.IPv6Loopback().AsSlice()), verdict(expr.VerdictDrop)))},
		{chain: "prerouting", text: "fib daddr type local jump publish",
			comment: "published ports on local addresses",
			exprs:   join(fibDaddrLocal(), one(jump("publish")))},
		{chain: "output", text: "fib daddr type local jump publish",
			comment: "published ports, from the host itself",
			exprs:   join(fibDaddrLocal(), one(jump("publish")))},
		{chain: "publish", text: "dnat ip to ip daddr . meta l4proto . th dport map @" + mapPorts,
			exprs: join(ipv4Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv4DaddrOffset, 4, reg1),
				meta(expr.MetaKeyL4PROTO, reg9),
				load(expr.PayloadBaseTransportHeader, transportDportOffset, 2, reg10),
				mapLookup(mapPorts), dnatFromMap()))},
		{chain: "publish", text: "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @" + mapPortsAny,
			exprs: join(ipv4Only(), one(
				meta(expr.MetaKeyL4PROTO, reg1),
				load(expr.PayloadBaseTransportHeader, transportDportOffset, 2, reg9),
				mapLookup(mapPortsAny), dnatFromMap()))},
		{chain: "publish", text: "dnat ip6 to ip6 daddr . meta l4proto . th dport map @" + mapPorts6,
			exprs: join(ipv6Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv6DaddrOffset, 16, reg1),
				meta(expr.MetaKeyL4PROTO, reg12),
				load(expr.PayloadBaseTransportHeader, transportDportOffset, 2, reg13),
				mapLookup(mapPorts6), dnat6FromMap()))},
		{chain: "publish", text: "meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @" + mapPortsAny6,
			exprs: join(ipv6Only(), one(
				meta(expr.MetaKeyL4PROTO, reg1),
				load(expr.PayloadBaseTransportHeader, transportDportOffset, 2, reg9),
				mapLookup(mapPortsAny6), dnat6FromMap()))},
		{chain: "postrouting", text: "ct status dnat ip saddr . oifname @" + setSubnets + " masquerade",
			comment: "hairpin: a container reaching a published port of its own network",
			exprs: join(ctBits(expr.CtKeySTATUS, ctStatusDNAT), ipv4Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv4SaddrOffset, 4, reg1),
				meta(expr.MetaKeyOIFNAME, reg9),
				lookup(setSubnets, reg1), &expr.Masq{}))},
		{chain: "postrouting", text: "ct status dnat ip6 saddr . oifname @" + setSubnets6 + " masquerade",
			exprs: join(ctBits(expr.CtKeySTATUS, ctStatusDNAT), ipv6Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv6SaddrOffset, 16, reg1),
				meta(expr.MetaKeyOIFNAME, reg12),
				lookup(setSubnets6, reg1), &expr.Masq{}))},
		{chain: "postrouting", text: "ip saddr . oifname @" + setSubnets + " return",
			comment: "traffic that stays on its own network",
			exprs: join(ipv4Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv4SaddrOffset, 4, reg1),
				meta(expr.MetaKeyOIFNAME, reg9),
				lookup(setSubnets, reg1), verdict(expr.VerdictReturn)))},
		{chain: "postrouting", text: "ip6 saddr . oifname @" + setSubnets6 + " return",
			exprs: join(ipv6Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv6SaddrOffset, 16, reg1),
				meta(expr.MetaKeyOIFNAME, reg12),
				lookup(setSubnets6, reg1), verdict(expr.VerdictReturn)))},
		{chain: "postrouting", text: "ct status dnat ip saddr 127.0.0.0/8 masquerade",
			comment: "the host reaching a published port on 127.0.0.1",
			exprs: join(ctBits(expr.CtKeySTATUS, ctStatusDNAT), ipv4Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv4SaddrOffset, 1, reg1),
				cmp(expr.CmpOpEq, reg1, []byte{127}), &expr.Masq{}))},
		{chain: "postrouting", text: "ip daddr . iifname @" + setUnmasked + " return",
			comment: "peers that see containers by their own addresses",
			exprs: join(ipv4Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv4DaddrOffset, 4, reg1),
				meta(expr.MetaKeyIIFNAME, reg9),
				lookup(setUnmasked, reg1), verdict(expr.VerdictReturn)))},
		{chain: "postrouting", text: "ip saddr . iifname @" + setMasqSubnets + " masquerade",
			comment: "the way out",
			exprs: join(ipv4Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv4SaddrOffset, 4, reg1),
				meta(expr.MetaKeyIIFNAME, reg9),
				lookup(setMasqSubnets, reg1), &expr.Masq{}))},
		{chain: "postrouting", text: "ip6 saddr . iifname @" + setMasqSubnets6 + " masquerade",
			comment: "the way out, IPv6 (NAT66)",
			exprs: join(ipv6Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv6SaddrOffset, 16, reg1),
				meta(expr.MetaKeyIIFNAME, reg12),
				lookup(setMasqSubnets6, reg1), &expr.Masq{}))},
		// A container routing a neighbour through its gateway comes back out of its own
		// bridge; on an icc=false network only a published port's connection may.
		{chain: "forward", text: "iifname @" + setNoICC + " oifname @" + setNoICC + " jump between_networks",
			comment: "containers of an icc=false network do not reach each other",
			exprs: one(meta(expr.MetaKeyIIFNAME, reg1), lookup(setNoICC, reg1),
				meta(expr.MetaKeyOIFNAME, reg1), lookup(setNoICC, reg1), jump("between_networks"))},
		{chain: "forward", text: "iifname . oifname @" + setSameBridge + " accept",
			exprs: one(meta(expr.MetaKeyIIFNAME, reg1), meta(expr.MetaKeyOIFNAME, reg12),
				lookup(setSameBridge, reg1), verdict(expr.VerdictAccept))},
		{chain: "forward", text: "iifname @" + setInternal + " drop",
			comment: "internal networks have no way out",
			exprs:   one(meta(expr.MetaKeyIIFNAME, reg1), lookup(setInternal, reg1), verdict(expr.VerdictDrop))},
		{chain: "forward", text: "oifname @" + setInternal + " drop",
			comment: "and no way in",
			exprs:   one(meta(expr.MetaKeyOIFNAME, reg1), lookup(setInternal, reg1), verdict(expr.VerdictDrop))},
		// Isolation comes before conntrack's verdicts: an ICMP error that a container
		// sends to the host quoting another network's flow is "related" to that flow, and
		// conntrack would deliver it into the other network.
		{chain: "forward", text: "iifname @" + setBridges + " oifname @" + setBridges + " jump between_networks",
			comment: "networks are isolated from each other",
			exprs: one(meta(expr.MetaKeyIIFNAME, reg1), lookup(setBridges, reg1),
				meta(expr.MetaKeyOIFNAME, reg1), lookup(setBridges, reg1), jump("between_networks"))},
		{chain: "forward", text: "ct state established,related accept",
			exprs: join(ctBits(expr.CtKeySTATE, ctStateEstablished|ctStateRelated), one(verdict(expr.VerdictAccept)))},
		{chain: "forward", text: "ct status dnat accept",
			comment: "published ports",
			exprs:   join(ctBits(expr.CtKeySTATUS, ctStatusDNAT), one(verdict(expr.VerdictAccept)))},
		// A peer that sees containers by their own addresses reaches them the same way:
		// a pod on another node connects to a pod here without NAT.
		{chain: "forward", text: "ip saddr . oifname @" + setUnmasked + " accept",
			comment: "and reach them by routing",
			exprs: join(ipv4Only(), one(
				load(expr.PayloadBaseNetworkHeader, ipv4SaddrOffset, 4, reg1),
				meta(expr.MetaKeyOIFNAME, reg9),
				lookup(setUnmasked, reg1), verdict(expr.VerdictAccept)))},
		{chain: "forward", text: "oifname @" + setNATBridges + " drop",
			comment: "masqueraded networks are reached only through published ports",
			exprs:   one(meta(expr.MetaKeyOIFNAME, reg1), lookup(setNATBridges, reg1), verdict(expr.VerdictDrop))},
		// Between networks only a published port's connection crosses, in both
		// directions. ICMP errors related to it do not: the anti-spoofing keeps a
		// container to its own connections, but an ICMP error names its connection only in
		// the packet it quotes, which anyone can forge.
		{chain: "between_networks", text: "ct status dnat ct state != related accept",
			comment: "a published port, reached from another network",
			exprs: join(ctBits(expr.CtKeySTATUS, ctStatusDNAT), one(
				&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
				cmp(expr.CmpOpNeq, reg1, native32(ctStateRelated)), verdict(expr.VerdictAccept)))},
		{chain: "between_networks", text: "drop", exprs: one(verdict(expr.VerdictDrop))},
	}
})

var bridgeRules = sync.OnceValue(func() []ruleSpec {
	return slices.Concat(bridgeRulesBeforeND(), ndGuard(ndNeighborSolicit, "nd-neighbor-solicit", ndOptSourceLLAddr),
		ndGuard(ndNeighborAdvert, "nd-neighbor-advert", ndOptTargetLLAddr), bridgeRulesAfterND())
})

var bridgeRulesBeforeND = sync.OnceValue(func() []ruleSpec {
	return []ruleSpec{
		{chain: "prerouting", text: "iifname != @" + setPorts + " accept",
			exprs: one(meta(expr.MetaKeyIIFNAME, reg1), notIn(setPorts, reg1), verdict(expr.VerdictAccept))},
		{chain: "prerouting", text: "iifname . ether saddr != @" + setPortMACs + " drop",
			comment: "a container sends only from its own MAC",
			exprs: one(meta(expr.MetaKeyIIFNAME, reg1), load(expr.PayloadBaseLLHeader, etherSaddrOffset, 6, reg12),
				notIn(setPortMACs, reg1), verdict(expr.VerdictDrop))},
		// Routers are the host's business: a container's advertisement would give the
		// host and its neighbours an address and a default route through it
		// (CVE-2020-13401), and a redirect would divert their traffic to it. Dropped
		// whatever the network's families, before anything IPv6 could be accepted.
		{chain: "prerouting", text: "icmpv6 type nd-router-advert drop",
			comment: "containers are not routers",
			exprs:   join(protocol(etherTypeIPv6), icmpv6Type(ndRouterAdvert), one(verdict(expr.VerdictDrop)))},
		{chain: "prerouting", text: "icmpv6 type nd-redirect drop",
			exprs: join(protocol(etherTypeIPv6), icmpv6Type(ndRedirect), one(verdict(expr.VerdictDrop)))},
		// Multicast listener discovery is between listeners and a multicast router, and
		// the host routes no multicast for containers. A bridge without a querier floods
		// listener reports to every port, so each new container made work in every
		// other's namespace (BENCHMARKS.md), and floods multicast whether or not it
		// learnt the group, so no delivery depends on the reports. A container's query
		// would make it the bridge's querier, which every neighbour answers.
		{chain: "prerouting", text: "icmpv6 type mld-listener-query drop",
			comment: "nor multicast routers",
			exprs:   join(protocol(etherTypeIPv6), icmpv6Type(mldListenerQuery), one(verdict(expr.VerdictDrop)))},
		{chain: "prerouting", text: "icmpv6 type mld-listener-report drop",
			exprs: join(protocol(etherTypeIPv6), icmpv6Type(mldListenerReport), one(verdict(expr.VerdictDrop)))},
		{chain: "prerouting", text: "icmpv6 type mld-listener-done drop",
			exprs: join(protocol(etherTypeIPv6), icmpv6Type(mldListenerDone), one(verdict(expr.VerdictDrop)))},
		{chain: "prerouting", text: "icmpv6 type mld2-listener-report drop",
			exprs: join(protocol(etherTypeIPv6), icmpv6Type(mld2ListenerReport), one(verdict(expr.VerdictDrop)))},
		{chain: "prerouting", text: "iifname . ip saddr @" + setPortIPs + " accept",
			comment: "and only from its own address",
			exprs: join(protocol(etherTypeIPv4), one(
				meta(expr.MetaKeyIIFNAME, reg1), load(expr.PayloadBaseNetworkHeader, ipv4SaddrOffset, 4, reg12),
				lookup(setPortIPs, reg1), verdict(expr.VerdictAccept)))},
		{chain: "prerouting", text: "iifname . arp saddr ip @" + setPortIPs + " iifname . arp saddr ether @" + setPortMACs + " accept",
			exprs: join(protocol(etherTypeARP), one(
				meta(expr.MetaKeyIIFNAME, reg1), load(expr.PayloadBaseNetworkHeader, arpSenderIPOffset, 4, reg12),
				lookup(setPortIPs, reg1),
				meta(expr.MetaKeyIIFNAME, reg1), load(expr.PayloadBaseNetworkHeader, arpSenderEtherOffset, 6, reg12),
				lookup(setPortMACs, reg1), verdict(expr.VerdictAccept)))},
	}
})

var bridgeRulesAfterND = sync.OnceValue(func() []ruleSpec {
	return []ruleSpec{
		// IPv6 from a container's own addresses, its link-local one included: neighbour
		// discovery and everything else. A port without IPv6 has no element here.
		{chain: "prerouting", text: "iifname . ip6 saddr @" + setPortIPs6 + " accept",
			exprs: join(protocol(etherTypeIPv6), one(
				meta(expr.MetaKeyIIFNAME, reg1), load(expr.PayloadBaseNetworkHeader, ipv6SaddrOffset, 16, reg12),
				lookup(setPortIPs6, reg1), verdict(expr.VerdictAccept)))},
		// What a host asks for before it has an address of its own link-local one:
		// harmless to the host (not a router for its ports' solicitations, no DHCPv6
		// server) and what a container's own stack may send.
		{chain: "prerouting", text: "ip6 saddr fe80::/10 icmpv6 type nd-router-solicit accept",
			comment: "router solicitations and DHCPv6 from link-local addresses",
			exprs:   join(protocol(etherTypeIPv6), linkLocalSource(), icmpv6Type(ndRouterSolicit), one(verdict(expr.VerdictAccept)))},
		{chain: "prerouting", text: "ip6 saddr fe80::/10 udp dport 547 accept",
			exprs: join(protocol(etherTypeIPv6), linkLocalSource(), one(
				meta(expr.MetaKeyL4PROTO, reg1), cmp(expr.CmpOpEq, reg1, []byte{unix.IPPROTO_UDP}),
				load(expr.PayloadBaseTransportHeader, transportDportOffset, 2, reg1), cmp(expr.CmpOpEq, reg1, be16(udpDportDHCPv6Server)),
				verdict(expr.VerdictAccept)))},
		{chain: "prerouting", text: "drop",
			comment: "anything else from a container port is spoofed",
			exprs:   one(verdict(expr.VerdictDrop))},
		// Only frames from one port of a bridge to another pass the bridge's forward
		// hook: what a container sends to the host (its way out, published ports) is the
		// host's input, and what the host sends it is the bridge's output. The ports a
		// port forwards to are of its own network, so its own membership says it all.
		// The bridge family has no conntrack here, so with br_netfilter (which DNATs a
		// published port of the container's own network, reached through the host's
		// address, while bridging) that one connection is dropped as well.
		{chain: "forward", text: "iifname @" + setNoICC + " drop",
			comment: "containers of an icc=false network do not reach each other",
			exprs:   one(meta(expr.MetaKeyIIFNAME, reg1), lookup(setNoICC, reg1), verdict(expr.VerdictDrop))},
	}
})

func comment(text string) []byte {
	if text == "" {
		return nil
	}
	return userdata.AppendString(nil, userdata.TypeComment, text)
}
