package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TraceTablePrefix begins the names of `ctnet trace`'s temporary tables:
// ctnet_trace_<pid>_<start time>_<n>, the tracing process's identity and its n-th
// trace, so that gc can tell a running trace's tables from those a killed one left.
const TraceTablePrefix = "ctnet_trace_"

// Probe is the one packet a trace follows: its protocol and its unique source port,
// or ICMP echo identifier.
type Probe struct {
	Proto byte // unix.IPPROTO_TCP, _UDP, _ICMP (an IPv4 echo request) or _ICMPV6 (an IPv6 one)
	ID    uint16
	// To are the destinations the probe has on its way, all of one family: the
	// address it is sent to, and the container's that a published port DNATs it to.
	To []netip.Addr
}

// The chains of a trace table. The kernel clears a packet's trace flag whenever it
// crosses into another namespace, so every namespace on the path marks the probe
// itself, before any of ctnet's chains (raw is -300); the seen_ chains come after
// ctnet's (srcnat is 100), have no rules and so report the packet as the hook leaves
// it, translated addresses included.
const (
	TraceMarkPrerouting = "mark_prerouting"
	TraceMarkOutput     = "mark_output"
	TraceSeenInput      = "seen_input"
	TraceSeenForward    = "seen_forward"
	TraceSeenPost       = "seen_postrouting"
	traceMarkPriority   = -350
	traceSeenPriority   = 500
)

// TraceTable is one trace table in a namespace and the process that made it.
type TraceTable struct {
	Family    nftables.TableFamily
	Name      string
	PID       int
	StartTime uint64
}

func (t TraceTable) String() string { return FamilyName(t.Family) + " " + t.Name }

// TraceTableName is the name of the tables of the seq-th trace of the process with
// pid and start time.
func TraceTableName(pid int, startTime, seq uint64) string {
	return fmt.Sprintf("%s%d_%d_%d", TraceTablePrefix, pid, startTime, seq)
}

// AddTraceTables makes the inet and bridge trace tables called name, which mark
// the probe for tracing at every hook it can enter a namespace by.
func AddTraceTables(c *nftables.Conn, name string, p Probe) error {
	accept := nftables.ChainPolicyAccept
	inet := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	bridge := &nftables.Table{Name: name, Family: nftables.TableFamilyBridge}
	c.AddTable(inet)
	c.AddTable(bridge)
	chain := func(t *nftables.Table, name string, hook *nftables.ChainHook, prio int) *nftables.Chain {
		p := nftables.ChainPriority(prio)
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: &p, Policy: &accept})
	}
	mark := func(t *nftables.Table, ch *nftables.Chain) {
		for _, to := range p.To {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: join(ipFamilyOf(t.Family, to), p.match(to), one(
				&expr.Immediate{Register: reg1, Data: []byte{1}},
				&expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: reg1}))})
		}
	}
	mark(inet, chain(inet, TraceMarkPrerouting, nftables.ChainHookPrerouting, traceMarkPriority))
	mark(inet, chain(inet, TraceMarkOutput, nftables.ChainHookOutput, traceMarkPriority))
	chain(inet, TraceSeenInput, nftables.ChainHookInput, traceSeenPriority)
	chain(inet, TraceSeenForward, nftables.ChainHookForward, traceSeenPriority)
	chain(inet, TraceSeenPost, nftables.ChainHookPostrouting, traceSeenPriority)
	mark(bridge, chain(bridge, TraceMarkPrerouting, nftables.ChainHookPrerouting, traceMarkPriority))
	mark(bridge, chain(bridge, TraceMarkOutput, nftables.ChainHookOutput, traceMarkPriority))
	chain(bridge, TraceSeenForward, nftables.ChainHookForward, traceSeenPriority)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add trace tables: %w", err)
	}
	return nil
}

// ipFamilyOf matches the packets of addr's family in a table of family f: by the
// netfilter protocol in an inet table, by the ethertype in a bridge one.
func ipFamilyOf(f nftables.TableFamily, addr netip.Addr) []expr.Any {
	switch {
	case f == nftables.TableFamilyBridge && addr.Is4():
		return protocol(etherTypeIPv4)
	case f == nftables.TableFamilyBridge:
		return protocol(etherTypeIPv6)
	case addr.Is4():
		return ipv4Only()
	}
	return ipv6Only()
}

// match matches the probe on its way to one of its destinations and nothing else:
// that destination, its protocol and source port, or an ICMP or ICMPv6 echo request
// with its identifier. (Its source address is not matched: masquerade may change it
// on the way, and the host's own probe gets its address from the route.)
func (p Probe) match(to netip.Addr) []expr.Any {
	daddr := uint32(ipv4DaddrOffset)
	if to.Is6() {
		daddr = ipv6DaddrOffset
	}
	l4 := one(
		load(expr.PayloadBaseNetworkHeader, daddr, uint32(to.BitLen()/8), reg1), cmp(expr.CmpOpEq, reg1, to.AsSlice()),
		meta(expr.MetaKeyL4PROTO, reg1), cmp(expr.CmpOpEq, reg1, []byte{p.Proto}))
	if echo, ok := echoRequestType[p.Proto]; ok {
		return join(l4, one(
			load(expr.PayloadBaseTransportHeader, 0, 1, reg1), cmp(expr.CmpOpEq, reg1, []byte{echo}),
			load(expr.PayloadBaseTransportHeader, 4, 2, reg1), cmp(expr.CmpOpEq, reg1, be16(p.ID))))
	}
	return join(l4, one(load(expr.PayloadBaseTransportHeader, 0, 2, reg1), cmp(expr.CmpOpEq, reg1, be16(p.ID))))
}

// echoRequestType is the type of an echo request in ICMP and in ICMPv6.
var echoRequestType = map[byte]byte{unix.IPPROTO_ICMP: 8, unix.IPPROTO_ICMPV6: 128}

// DeleteTraceTables removes the trace tables called name; missing ones are no error.
func DeleteTraceTables(c *nftables.Conn, name string) error {
	for _, f := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge} {
		t := &nftables.Table{Name: name, Family: f}
		c.AddTable(t)
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete trace tables %s: %w", name, err)
	}
	return nil
}

// TraceTables lists the trace tables in c's namespace.
func TraceTables(c *nftables.Conn) ([]TraceTable, error) {
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var out []TraceTable
	for _, t := range tables {
		rest, ok := strings.CutPrefix(t.Name, TraceTablePrefix)
		if !ok {
			continue
		}
		tt := TraceTable{Family: t.Family, Name: t.Name}
		fields := strings.Split(rest, "_")
		tt.PID, _ = strconv.Atoi(fields[0])
		if len(fields) > 1 {
			tt.StartTime, _ = strconv.ParseUint(fields[1], 10, 64)
		}
		out = append(out, tt)
	}
	return out, nil
}

// RuleKey names one rule as a trace event does.
type RuleKey struct {
	Family nftables.TableFamily
	Chain  string
	Handle uint64
}

// Rule is one of ctnet's rules: its nft text and its comment, if any.
type Rule struct {
	Text, Comment string
}

// Rules returns ctnet's rules in c's namespace by handle, for reading trace events.
// A chain whose rules are not ctnet's (an older ctnet's, or changed by hand) gives
// each rule its comment alone.
func Rules(c *nftables.Conn) (map[RuleKey]Rule, error) {
	out := map[RuleKey]Rule{}
	for _, tbl := range []struct {
		t      *nftables.Table
		chains []chainSpec
		rules  []ruleSpec
	}{{inetTable, inetChains, inetRules()}, {bridgeTable, bridgeChains, bridgeRules()}} {
		if ok, err := tableExists(c, tbl.t); err != nil || !ok {
			return out, err
		}
		for _, ch := range tbl.chains {
			got, err := c.GetRules(tbl.t, &nftables.Chain{Name: ch.name, Table: tbl.t})
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("list rules of chain %s: %w", ch.name, err)
			}
			var specs []ruleSpec
			for _, r := range tbl.rules {
				if r.chain == ch.name {
					specs = append(specs, r)
				}
			}
			for i, r := range got {
				var rule Rule
				rule.Comment, _ = userdata.GetString(r.UserData, userdata.TypeComment)
				if len(got) == len(specs) {
					rule.Text = specs[i].text
				}
				out[RuleKey{tbl.t.Family, ch.name, r.Handle}] = rule
			}
		}
	}
	return out, nil
}
