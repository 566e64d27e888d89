package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"golang.org/x/sys/unix"
)

var (
	inetTable   = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	bridgeTable = &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge}
)

// elementsPerMessage bounds one netlink message: the kernel refuses a message larger
// than the socket's send buffer.
const elementsPerMessage = 512

// elements is the state turned into set elements, per table and set name.
type elements struct {
	inet   map[string][]nftables.SetElement
	bridge map[string][]nftables.SetElement
}

func ifname(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

// pad4 pads a concatenation component to its 32-bit register boundary.
func pad4(b []byte) []byte {
	if r := len(b) % 4; r != 0 {
		b = append(b, make([]byte, 4-r)...)
	}
	return b
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, pad4(p)...)
	}
	return out
}

func port16(p uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, p)
	return b
}

func (s State) elements() (elements, error) {
	e := elements{inet: map[string][]nftables.SetElement{}, bridge: map[string][]nftables.SetElement{}}
	addI := func(set string, el nftables.SetElement) { e.inet[set] = append(e.inet[set], el) }
	addB := func(set string, el nftables.SetElement) { e.bridge[set] = append(e.bridge[set], el) }
	if s.Owner != "" {
		if len(s.Owner) > MaxOwnerLen {
			return e, fmt.Errorf("owner %q is longer than the %d bytes nftables keeps in a comment", s.Owner, MaxOwnerLen)
		}
		addI(setOwner, nftables.SetElement{Key: ifname(ownerKey), Comment: s.Owner})
		addI(setOwner, nftables.SetElement{Key: ifname(rulesKey), Comment: rulesVersion()})
	}
	for _, n := range s.Networks {
		if n.Subnet.IsValid() && !n.Subnet.Addr().Is4() || n.Subnet6.IsValid() && !n.Subnet6.Addr().Is6() || !n.Subnet.IsValid() && !n.Subnet6.IsValid() {
			return e, fmt.Errorf("network on %s: subnets %s and %s are not an IPv4 and an IPv6 subnet", n.Bridge, n.Subnet, n.Subnet6)
		}
		br := ifname(n.Bridge)
		addI(setBridges, nftables.SetElement{Key: br})
		addI(setSameBridge, nftables.SetElement{Key: cat(br, br)})
		for _, family := range []struct {
			subnet               netip.Prefix
			subnets, masqueraded string
		}{{n.Subnet, setSubnets, setMasqSubnets}, {n.Subnet6, setSubnets6, setMasqSubnets6}} {
			if !family.subnet.IsValid() {
				continue
			}
			subnet := rangeOn(family.subnet, br)
			addI(family.subnets, subnet)
			if n.Masquerade && !n.Internal {
				addI(family.masqueraded, subnet)
			}
		}
		if n.NoICC {
			addI(setNoICC, nftables.SetElement{Key: br})
		}
		if n.Internal {
			addI(setInternal, nftables.SetElement{Key: br})
			continue
		}
		if n.Masquerade {
			addI(setNATBridges, nftables.SetElement{Key: br})
			for _, p := range n.NonMasquerade {
				if !p.IsValid() || !p.Addr().Is4() {
					return e, fmt.Errorf("network on %s: non-masquerade range %s is not an IPv4 prefix", n.Bridge, p)
				}
				addI(setUnmasked, rangeOn(p, br))
			}
		}
	}
	for _, p := range s.Ports {
		proto, err := ProtoNumber(p.Proto)
		if err != nil {
			return e, err
		}
		// The container's address says the family; a host address, if any, must
		// be of the same.
		ports, portsAny := mapPorts, mapPortsAny
		if p.ContainerIP.Is6() {
			ports, portsAny = mapPorts6, mapPortsAny6
		}
		if !p.ContainerIP.IsValid() || p.ContainerIP.Is4In6() || p.HostIP.IsValid() && p.HostIP.Is4() != p.ContainerIP.Is4() {
			return e, fmt.Errorf("port %s: the host and container addresses must be of one family", p)
		}
		val := cat(p.ContainerIP.AsSlice(), port16(p.ContainerPort))
		if p.AnyAddress() {
			addI(portsAny, nftables.SetElement{Key: cat([]byte{proto}, port16(p.HostPort)), Val: val})
			continue
		}
		addI(ports, nftables.SetElement{Key: cat(p.HostIP.AsSlice(), []byte{proto}, port16(p.HostPort)), Val: val})
	}
	for _, ep := range s.Endpoints {
		if len(ep.MAC) != 6 || ep.IP.IsValid() && !ep.IP.Is4() || ep.IP6.IsValid() && (!ep.IP6.Is6() || ep.IP6.Is4In6()) || !ep.IP.IsValid() && !ep.IP6.IsValid() {
			return e, fmt.Errorf("endpoint %s: needs a MAC and an IPv4 or IPv6 address (or both)", ep.HostVeth)
		}
		port := ifname(ep.HostVeth)
		addB(setPorts, nftables.SetElement{Key: port})
		addB(setPortMACs, nftables.SetElement{Key: cat(port, ep.MAC)})
		if ep.IP.IsValid() {
			addB(setPortIPs, nftables.SetElement{Key: cat(port, ep.IP.AsSlice())})
		}
		if ep.IP6.IsValid() {
			addB(setPortIPs6, nftables.SetElement{Key: cat(port, ep.IP6.AsSlice())})
			addB(setPortIPs6, nftables.SetElement{Key: cat(port, LinkLocal(ep.MAC).AsSlice())})
		}
		if ep.NoICC {
			addB(setNoICC, nftables.SetElement{Key: port})
		}
	}
	return e, nil
}

// rangeOn is the interval element "prefix . bridge", of either family.
func rangeOn(p netip.Prefix, br []byte) nftables.SetElement {
	return nftables.SetElement{Key: cat(p.Masked().Addr().AsSlice(), br), KeyEnd: cat(lastAddr(p), br)}
}

// lastAddr is the last address of a prefix of either family, as bytes.
func lastAddr(p netip.Prefix) []byte {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return b
}

func newSet(t *nftables.Table, s setSpec) *nftables.Set {
	set := &nftables.Set{
		Table:         t,
		Name:          s.name,
		KeyType:       s.keyType(),
		Interval:      s.interval,
		Concatenation: len(s.key) > 1,
	}
	if len(s.key) == 1 && s.key[0] == nftables.TypeIFName {
		// nft prints a lone string key in host byte order only when told so.
		set.KeyByteOrder = binaryutil.NativeEndian
	}
	if s.data != nil {
		set.IsMap = true
		set.DataType = concat(s.data)
	}
	return set
}

// Apply adds and removes the change's elements in one batch: either all of it takes
// effect or none. It fails if the tables are missing or an element to remove is not
// there; the caller then rebuilds from its whole state.
func Apply(c *nftables.Conn, ch Change) error {
	if ch.Empty() {
		return nil
	}
	add, err := ch.Add.elements()
	if err != nil {
		return err
	}
	del, err := ch.Remove.elements()
	if err != nil {
		return err
	}
	queue := func(t *nftables.Table, specs []setSpec, els map[string][]nftables.SetElement, fn func(*nftables.Set, []nftables.SetElement) error) error {
		for _, s := range specs {
			for chunk := range chunks(els[s.name]) {
				if err := fn(newSet(t, s), chunk); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, step := range []error{
		queue(inetTable, inetSets, del.inet, c.SetDeleteElements),
		queue(bridgeTable, bridgeSets, del.bridge, c.SetDeleteElements),
		queue(inetTable, inetSets, add.inet, c.SetAddElements),
		queue(bridgeTable, bridgeSets, add.bridge, c.SetAddElements),
	} {
		if step != nil {
			return fmt.Errorf("update firewall: %w", step)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update firewall: %w", err)
	}
	return nil
}

func chunks(els []nftables.SetElement) func(func([]nftables.SetElement) bool) {
	return func(yield func([]nftables.SetElement) bool) {
		for len(els) > 0 {
			n := min(len(els), elementsPerMessage)
			if !yield(els[:n]) {
				return
			}
			els = els[n:]
		}
	}
}

// Rebuild replaces both tables with ones holding exactly the state, in one batch.
func Rebuild(c *nftables.Conn, s State) error {
	els, err := s.Sorted().elements()
	if err != nil {
		return err
	}
	if err := build(c, inetTable, inetSets, inetChains, inetRules(), els.inet); err != nil {
		return err
	}
	if err := build(c, bridgeTable, bridgeSets, bridgeChains, bridgeRules(), els.bridge); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("rebuild firewall: %w", err)
	}
	return nil
}

func build(c *nftables.Conn, t *nftables.Table, sets []setSpec, chains []chainSpec, rules []ruleSpec, els map[string][]nftables.SetElement) error {
	if err := replaceTable(c, t); err != nil {
		return err
	}
	for _, s := range sets {
		set := newSet(t, s)
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("rebuild firewall: set %s: %w", s.name, err)
		}
		for chunk := range chunks(els[s.name]) {
			if err := c.SetAddElements(set, chunk); err != nil {
				return fmt.Errorf("rebuild firewall: set %s: %w", s.name, err)
			}
		}
	}
	byName := map[string]*nftables.Chain{}
	for _, cs := range chains {
		ch := &nftables.Chain{Name: cs.name, Table: t}
		if cs.hook != nil {
			accept := nftables.ChainPolicyAccept
			ch.Type, ch.Hooknum, ch.Priority, ch.Policy = cs.typ, cs.hook, nftables.ChainPriorityRef(nftables.ChainPriority(cs.priority)), &accept
		}
		byName[cs.name] = c.AddChain(ch)
	}
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: byName[r.chain], Exprs: r.exprs, UserData: comment(r.comment)})
	}
	return nil
}

// replaceTable queues, in c's batch, an empty table t in place of any there. Only
// a table that exists is deleted: the kernel destroys a deleted table after an RCU
// grace period, which the socket's close then waits for (about 10 ms), so "add, delete,
// add", valid whether or not the table exists, costs that on every first creation.
func replaceTable(c *nftables.Conn, t *nftables.Table) error {
	if ok, err := tableExists(c, t); err != nil {
		return err
	} else if ok {
		c.DelTable(t)
	}
	c.AddTable(t)
	return nil
}

// Delete removes both of ctnet's tables; tables that do not exist are not an error.
func Delete(c *nftables.Conn) error {
	for _, t := range []*nftables.Table{inetTable, bridgeTable} {
		c.AddTable(t)
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete firewall tables: %w", err)
	}
	return nil
}

// Tables lists which of ctnet's tables are present, as "FAMILY ctnet".
func Tables(c *nftables.Conn) ([]string, error) {
	var out []string
	for _, t := range []*nftables.Table{inetTable, bridgeTable} {
		ok, err := tableExists(c, t)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, FamilyName(t.Family)+" "+TableName)
		}
	}
	return out, nil
}

func tableExists(c *nftables.Conn, t *nftables.Table) (bool, error) {
	_, err := c.ListTableOfFamily(t.Name, t.Family)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up firewall table: %w", err)
	}
	return true, nil
}
