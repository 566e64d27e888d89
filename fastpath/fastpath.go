// Package fastpath is the same-host shortcut between two containers of one network:
// a traffic-control eBPF program on the host ends of their veths that hands a frame
// from one container straight to the other's interface (bpf_redirect_peer), past the
// bridge and the backlog queue, as Cilium does between pods.
//
// The bridge path is the reference and the fallback: the program redirects only a
// frame that the bridge table would have accepted and forwarded to that one port —
// untagged IPv4 or IPv6 from the port's own MAC and address, to another port of the
// same bridge at that port's own MAC and address — and lets everything else go on to
// the bridge, where ctnet's tables judge it. IPv6 takes the shortcut only for TCP and
// UDP right after the fixed header: neighbour discovery, router and listener
// messages are ICMPv6, for which the bridge table has rules the program does not
// repeat. Which ports take part (a network with icc,
// no bandwidth limits) is the caller's choice: a port that is not in the maps is
// never a source or a destination.
//
// A host namespace has one program and three maps, shared by all its ports. The CLI is a
// process per command and bpffs may not be mounted, so nothing is pinned: the program
// lives as long as a cls_bpf filter holds it, and a later command finds it, and the
// maps it uses, from the filter on any port (Find).
package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Names the kernel keeps for the program and its maps (at most 15 characters): Find
// takes a filter's program for ctnet's only under programName. A program whose
// checks change gets a new name, so that an older ctnet's program, with the maps it
// reads, is never mixed with the new one (gc moves ports over).
const (
	programName = "ctnet_peer_v2"
	// The first program, IPv4 only: its ports entries are the first 16 bytes of
	// today's, families unset, and it has no IPv6 peers map. Detach still takes its
	// ports off, entries included, so that none is left to a later port.
	olderProgramName = "ctnet_peer_v1"
	portsName        = "ctnet_ports"
	peersName        = "ctnet_peers"
	peers6Name       = "ctnet_peers6"
	filterName       = "ctnet_peer"
	maxPorts         = 65536
)

// Port is one host veth as the program knows it.
type Port struct {
	Index  int              // the host veth's ifindex
	MAC    net.HardwareAddr // the container interface's MAC
	IP     netip.Addr       // its IPv4 address; invalid on an IPv6-only network
	IP6    netip.Addr       // its IPv6 address; invalid on a network without IPv6
	Bridge int              // the bridge's ifindex: ports of one bridge reach each other
}

// The maps' layouts; the program reads them at these offsets.
//
//	ports:  host veth ifindex (u32) → MAC [6], families [1], pad [1], IPv4 [4], bridge ifindex (u32), IPv6 [16]
//	peers:  bridge ifindex (u32), IPv4 [4] → host veth ifindex (u32), MAC [6], pad [2]
//	peers6: bridge ifindex (u32), IPv6 [16] → the same
//
// Addresses are in network order. The ports entry of a source holds what its frames
// must carry and which families it has, so that no frame passes for the zero address
// of a family the port lacks; the peers entry of a destination is found by the bridge
// of the source, so no frame reaches a port of another bridge (another network) by
// this path.
const (
	portValueSize = 32
	peerKeySize   = 8
	peer6KeySize  = 20
	peerValueSize = 12

	hasIPv4 = 1 << 0
	hasIPv6 = 1 << 1
)

// Path is a host namespace's program with its maps.
type Path struct {
	prog                 *ebpf.Program
	ports, peers, peers6 *ebpf.Map
}

// Close releases the descriptors; the program and maps live on in the filters.
func (p *Path) Close() error {
	return errors.Join(p.prog.Close(), p.ports.Close(), p.peers.Close(), p.peers6.Close())
}

// ID is the kernel's id of the program, as tc lists it.
func (p *Path) ID() (int, error) {
	info, err := p.prog.Info()
	if err != nil {
		return 0, err
	}
	id, _ := info.ID()
	return int(id), nil
}

// newMap makes an empty hash map of up to maxPorts entries. Its elements are allocated
// as ports are entered, not all at once: preallocating them took about 7 ms of the
// first container's set-up (BenchmarkLoad) and kernel memory for 65,536 entries per
// map, for hosts that have a handful.
func newMap(name string, keySize, valueSize uint32) (*ebpf.Map, error) {
	return ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.Hash, Flags: unix.BPF_F_NO_PREALLOC,
		KeySize: keySize, ValueSize: valueSize, MaxEntries: maxPorts})
}

// Load makes a new program and its empty maps. An error means this kernel (or this
// process's privileges) cannot run it: the caller keeps the bridge path.
func Load() (*Path, error) {
	ports, err := newMap(portsName, 4, portValueSize)
	if err != nil {
		return nil, fmt.Errorf("create the fast path's ports map: %w", err)
	}
	peers, err := newMap(peersName, peerKeySize, peerValueSize)
	if err != nil {
		ports.Close()
		return nil, fmt.Errorf("create the fast path's peers map: %w", err)
	}
	peers6, err := newMap(peers6Name, peer6KeySize, peerValueSize)
	if err != nil {
		ports.Close()
		peers.Close()
		return nil, fmt.Errorf("create the fast path's IPv6 peers map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: programName, Type: ebpf.SchedCLS, License: "Dual MIT/GPL",
		Instructions: instructions(ports.FD(), peers.FD(), peers6.FD()),
	})
	if err != nil {
		ports.Close()
		peers.Close()
		peers6.Close()
		return nil, fmt.Errorf("load the fast path's program: %w", err)
	}
	return &Path{prog: prog, ports: ports, peers: peers, peers6: peers6}, nil
}

// Offsets in struct __sk_buff (include/uapi/linux/bpf.h).
const (
	skbVlanPresent = 20
	skbIfindex     = 40
	skbData        = 76
	skbDataEnd     = 80
)

// Offsets in an untagged Ethernet frame, and in the IPv4 or IPv6 packet it carries.
const (
	ethDst     = 0
	ethSrc     = 6
	ethType    = 12
	ethLen     = 14
	ipSrc      = ethLen + 12
	ipDst      = ethLen + 16
	ipLen      = ethLen + 20
	ip6NextHdr = ethLen + 6
	ip6Src     = ethLen + 8
	ip6Dst     = ethLen + 24
	ip6Len     = ethLen + 40
)

// EtherTypes as the program compares them: a 16-bit load of the big-endian field
// reads it in the machine's own order.
var (
	etherTypeIPv4 = int32(binary.NativeEndian.Uint16([]byte{0x08, 0x00}))
	etherTypeIPv6 = int32(binary.NativeEndian.Uint16([]byte{0x86, 0xdd}))
)

// Offsets in a ports entry, and in the stack frame where the peer keys are built.
const (
	portMAC      = 0
	portFamilies = 6
	portIP       = 8
	portBridge   = 12
	portIP6      = 16
	peerKey4     = -16 // bridge, IPv4
	peerKey6     = -40 // bridge, IPv6
)

// Verdicts: TC_ACT_UNSPEC lets the frame go on (the next filter, then the bridge);
// bpf_redirect_peer returns TC_ACT_REDIRECT itself.
const actContinue = -1

// instructions is the program. Registers: R6 the skb, R7 the frame's start, R8 its
// end, R9 the source's ports entry, R0 at "peer" the destination's peers entry. Any
// check that fails continues to the bridge, which judges the frame as if the program
// were not there.
func instructions(portsFD, peersFD, peers6FD int) asm.Instructions {
	return slices.Concat(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// A VLAN tag the container set travels beside the frame; the bridge path
		// treats tagged frames, not this one.
		asm.LoadMem(asm.R2, asm.R6, skbVlanPresent, asm.Word),
		asm.JNE.Imm(asm.R2, 0, "bridge"),
		asm.LoadMem(asm.R7, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R8, asm.R6, skbDataEnd, asm.Word),
		// The headers read below must be in the linear data (the verifier insists).
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, ethLen),
		asm.JGT.Reg(asm.R2, asm.R8, "bridge"),
		// The source: the port the frame came in by. A port without an entry (icc off,
		// bandwidth limits, or not set up yet) takes the bridge.
		asm.LoadMem(asm.R2, asm.R6, skbIfindex, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, portsFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "bridge"),
		asm.Mov.Reg(asm.R9, asm.R0),
		// Anti-spoofing, as the bridge table's prerouting: the source MAC and the
		// source address must be the port's own. A spoofed frame goes to the bridge,
		// which drops it.
		asm.LoadMem(asm.R2, asm.R7, ethSrc, asm.Word),
		asm.LoadMem(asm.R3, asm.R9, portMAC, asm.Word),
		asm.JNE.Reg(asm.R2, asm.R3, "bridge"),
		asm.LoadMem(asm.R2, asm.R7, ethSrc+4, asm.Half),
		asm.LoadMem(asm.R3, asm.R9, portMAC+4, asm.Half),
		asm.JNE.Reg(asm.R2, asm.R3, "bridge"),
		// IPv4 and IPv6 only: ARP and the rest take the bridge, whose rules for them
		// the program does not repeat.
		asm.LoadMem(asm.R2, asm.R7, ethType, asm.Half),
		asm.JEq.Imm(asm.R2, etherTypeIPv4, "ipv4"),
		asm.JNE.Imm(asm.R2, etherTypeIPv6, "bridge"),
	}, ipv6Instructions(peers6FD), ipv4Instructions(peersFD), asm.Instructions{
		// The frame must be addressed to the destination port's MAC, as the bridge
		// would deliver it there: a frame to the gateway's MAC is routed by the host
		// (published ports, masquerade), broadcast and multicast are flooded.
		asm.LoadMem(asm.R2, asm.R7, ethDst, asm.Word).WithSymbol("peer"),
		asm.LoadMem(asm.R3, asm.R0, 4, asm.Word),
		asm.JNE.Reg(asm.R2, asm.R3, "bridge"),
		asm.LoadMem(asm.R2, asm.R7, ethDst+4, asm.Half),
		asm.LoadMem(asm.R3, asm.R0, 8, asm.Half),
		asm.JNE.Reg(asm.R2, asm.R3, "bridge"),
		// Into the destination container's interface, in its namespace.
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirectPeer.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, actContinue).WithSymbol("bridge"),
		asm.Return(),
	})
}

// ipv6Instructions check an IPv6 frame's source and find its destination's peers
// entry.
func ipv6Instructions(peers6FD int) asm.Instructions {
	insns := append(familyInstructions(ip6Len, hasIPv6),
		// TCP or UDP right after the fixed header: ICMPv6 (neighbour discovery,
		// router and listener messages) and extension headers, which could carry
		// it, are the bridge table's to judge.
		asm.LoadMem(asm.R2, asm.R7, ip6NextHdr, asm.Byte),
		asm.JEq.Imm(asm.R2, unix.IPPROTO_TCP, "ipv6 source"),
		asm.JNE.Imm(asm.R2, unix.IPPROTO_UDP, "bridge"),
	)
	// The port's own global address is the only source taken: a link-local one
	// takes the bridge.
	for i := int16(0); i < 16; i += 4 {
		load := asm.LoadMem(asm.R2, asm.R7, ip6Src+i, asm.Word)
		if i == 0 {
			load = load.WithSymbol("ipv6 source")
		}
		insns = append(insns, load,
			asm.LoadMem(asm.R3, asm.R9, portIP6+i, asm.Word),
			asm.JNE.Reg(asm.R2, asm.R3, "bridge"))
	}
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R9, portBridge, asm.Word),
		asm.StoreMem(asm.RFP, peerKey6, asm.R2, asm.Word))
	for i := int16(0); i < 16; i += 4 {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.R7, ip6Dst+i, asm.Word),
			asm.StoreMem(asm.RFP, peerKey6+4+i, asm.R2, asm.Word))
	}
	return append(insns, peerInstructions(peers6FD, peerKey6)...)
}

// ipv4Instructions check an IPv4 frame's source and find its destination's peers
// entry.
func ipv4Instructions(peersFD int) asm.Instructions {
	insns := familyInstructions(ipLen, hasIPv4)
	insns[0] = insns[0].WithSymbol("ipv4")
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R7, ipSrc, asm.Word),
		asm.LoadMem(asm.R3, asm.R9, portIP, asm.Word),
		asm.JNE.Reg(asm.R2, asm.R3, "bridge"),
		// The destination: looked up under the source's bridge, so only a port of the
		// same network is found (isolation).
		asm.LoadMem(asm.R2, asm.R9, portBridge, asm.Word),
		asm.StoreMem(asm.RFP, peerKey4, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R7, ipDst, asm.Word),
		asm.StoreMem(asm.RFP, peerKey4+4, asm.R2, asm.Word),
	)
	return append(insns, peerInstructions(peersFD, peerKey4)...)
}

// familyInstructions make sure the frame holds the family's headers and the source
// port has an address of that family.
func familyInstructions(headerLen int32, family int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, headerLen),
		asm.JGT.Reg(asm.R2, asm.R8, "bridge"),
		asm.LoadMem(asm.R2, asm.R9, portFamilies, asm.Byte),
		asm.And.Imm(asm.R2, family),
		asm.JEq.Imm(asm.R2, 0, "bridge"),
	}
}

// peerInstructions look the key built at the stack offset key up in a peers map and
// go on at "peer" with the destination's entry in R0.
func peerInstructions(peersFD int, key int64) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, peersFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "bridge"),
		asm.Ja.Label("peer"),
	}
}

// ingressFilter is the cls_bpf filter that runs prog on a link's ingress.
func ingressFilter(index, progFD int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: index, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: netlink.MakeHandle(0, 1), Priority: 1, Protocol: unix.ETH_P_ALL,
		},
		Fd: progFD, Name: filterName, DirectAction: true,
	}
}

// Find returns the Path whose program the filter on link index runs, or nil if it
// has none of ctnet's current one (or the link is gone).
func Find(h *netlink.Handle, index int) (*Path, error) {
	return find(h, index, false)
}

// find is Find, and with older the older program's Path too.
func find(h *netlink.Handle, index int, older bool) (*Path, error) {
	id, err := attachedID(h, index)
	if err != nil || id == 0 {
		return nil, err
	}
	return pathByID(id, older)
}

// pathByID is the Path of program id, if it is ctnet's (as pathOf says).
func pathByID(id int, older bool) (*Path, error) {
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the fast path's program %d: %w", id, err)
	}
	p, err := pathOf(prog, older)
	if p == nil {
		prog.Close()
	}
	return p, err
}

// attachedID is the id of the program of ctnet's filter on link index's ingress, or 0.
func attachedID(h *netlink.Handle, index int) (int, error) {
	filters, err := h.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: index}}, netlink.HANDLE_MIN_INGRESS)
	if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list the filters of link %d: %w", index, err)
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == filterName {
			return bf.Id, nil
		}
	}
	return 0, nil
}

// pathOf opens the maps prog uses; a program of another name is not ctnet's current
// one, nor, with older, its older one.
func pathOf(prog *ebpf.Program, older bool) (*Path, error) {
	info, err := prog.Info()
	if err != nil {
		return nil, err
	}
	ids, _ := info.MapIDs()
	current := info.Name == programName && len(ids) == 3
	if !current && !(older && info.Name == olderProgramName && len(ids) == 2) {
		return nil, nil
	}
	p := &Path{prog: prog}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			p.closeMaps()
			return nil, fmt.Errorf("open the fast path's map %d: %w", id, err)
		}
		mi, err := m.Info()
		switch {
		case err != nil:
			m.Close()
			p.closeMaps()
			return nil, err
		case mi.Name == portsName:
			p.ports = m
		case mi.Name == peersName:
			p.peers = m
		case mi.Name == peers6Name:
			p.peers6 = m
		default:
			m.Close()
		}
	}
	if p.ports == nil || p.peers == nil || current && p.peers6 == nil {
		p.closeMaps()
		return nil, nil
	}
	return p, nil
}

func (p *Path) closeMaps() {
	for _, m := range []*ebpf.Map{p.ports, p.peers, p.peers6} {
		if m != nil {
			m.Close()
		}
	}
}

// Attach runs the program on port's host veth and enters the port in the maps: the
// filter first, so that an entry is always reachable through its port's filter
// (Detach), and a crash between the two leaves a filter that finds nothing. A port
// whose filter runs another Path's program is moved to this one. It reports whether
// it changed anything: a port already on the path as it should be is left alone.
func (p *Path) Attach(h *netlink.Handle, port Port) (bool, error) {
	if !port.IP.Is4() && !port.IP6.Is6() || port.IP.IsValid() && !port.IP.Is4() || port.IP6.IsValid() && (!port.IP6.Is6() || port.IP6.Is4In6()) || len(port.MAC) != 6 {
		return false, fmt.Errorf("fast path for link %d: needs an IPv4 or IPv6 address (or both) and a MAC", port.Index)
	}
	id, err := attachedID(h, port.Index)
	if err != nil {
		return false, err
	}
	own, err := p.ID()
	if err != nil {
		return false, err
	}
	if id == own && p.holds(port) {
		return false, nil
	}
	if id != own {
		if id != 0 {
			if _, err := Detach(h, port.Index); err != nil {
				return false, err
			}
		}
		clsact := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: port.Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
		if err := h.QdiscReplace(clsact); err != nil {
			return false, fmt.Errorf("add clsact qdisc to link %d: %w", port.Index, err)
		}
		if err := h.FilterReplace(ingressFilter(port.Index, p.prog.FD())); err != nil {
			return false, fmt.Errorf("attach the fast path to link %d: %w", port.Index, err)
		}
	}
	if err := p.ports.Put(uint32(port.Index), portValue(port)); err != nil {
		return false, fmt.Errorf("enter link %d in the fast path: %w", port.Index, err)
	}
	for _, peer := range port.peerEntries() {
		if err := peer.m(p).Put(peer.key, peerValue(port)); err != nil {
			return false, fmt.Errorf("enter link %d in the fast path: %w", port.Index, err)
		}
	}
	return true, nil
}

// holds reports whether all of port's entries are in the maps as Attach makes them.
func (p *Path) holds(port Port) bool {
	var value [portValueSize]byte
	if p.ports.Lookup(uint32(port.Index), value[:]) != nil || string(value[:]) != string(portValue(port)) {
		return false
	}
	for _, e := range port.peerEntries() {
		var peer [peerValueSize]byte
		if e.m(p).Lookup(e.key, peer[:]) != nil || string(peer[:]) != string(peerValue(port)) {
			return false
		}
	}
	return true
}

// peerEntry is where a port is found as a destination: a key in one of the peers maps.
type peerEntry struct {
	m   func(*Path) *ebpf.Map
	key []byte
}

// peerEntries are a port's keys in the peers maps, one for each of its families.
func (port Port) peerEntries() []peerEntry {
	bridge := binary.NativeEndian.AppendUint32(nil, uint32(port.Bridge))
	var entries []peerEntry
	if port.IP.Is4() {
		entries = append(entries, peerEntry{func(p *Path) *ebpf.Map { return p.peers }, append(slices.Clip(bridge), port.IP.AsSlice()...)})
	}
	if port.IP6.Is6() {
		entries = append(entries, peerEntry{func(p *Path) *ebpf.Map { return p.peers6 }, append(slices.Clip(bridge), port.IP6.AsSlice()...)})
	}
	return entries
}

func portValue(port Port) []byte {
	var value [portValueSize]byte
	copy(value[portMAC:portMAC+6], port.MAC)
	if port.IP.Is4() {
		value[portFamilies] |= hasIPv4
		ip := port.IP.As4()
		copy(value[portIP:portIP+4], ip[:])
	}
	binary.NativeEndian.PutUint32(value[portBridge:], uint32(port.Bridge))
	if port.IP6.Is6() {
		value[portFamilies] |= hasIPv6
		ip := port.IP6.As16()
		copy(value[portIP6:portIP6+16], ip[:])
	}
	return value[:]
}

// portOf reads a ports entry back, the older program's too.
func portOf(index uint32, value []byte) Port {
	port := Port{Index: int(index), MAC: net.HardwareAddr(append([]byte(nil), value[portMAC:portMAC+6]...)),
		Bridge: int(binary.NativeEndian.Uint32(value[portBridge:]))}
	families := value[portFamilies]
	if len(value) <= portIP6 {
		families = hasIPv4
	}
	if families&hasIPv4 != 0 {
		port.IP = netip.AddrFrom4([4]byte(value[portIP : portIP+4]))
	}
	if families&hasIPv6 != 0 {
		port.IP6 = netip.AddrFrom16([16]byte(value[portIP6 : portIP6+16]))
	}
	return port
}

func peerValue(port Port) []byte {
	var peer [peerValueSize]byte
	binary.NativeEndian.PutUint32(peer[0:4], uint32(port.Index))
	copy(peer[4:10], port.MAC)
	return peer[:]
}

// Detach takes link index's entries out of the maps its filter's program reads, then
// the filter off the link: from then on its frames take the bridge. The entries go
// first, so that a crash between leaves a filter that finds nothing. A link without
// the filter, or gone, is done. A filter of ctnet's whose program this ctnet does not
// know (a later one's) is removed all the same: a port that must take the bridge
// (icc off, bandwidth limits) must not be redirected past it; its entries stay in
// that program's maps, which hold them for no port. It reports whether there was a
// filter to remove.
func Detach(h *netlink.Handle, index int) (bool, error) {
	id, err := attachedID(h, index)
	if err != nil || id == 0 {
		return false, err
	}
	p, err := pathByID(id, true)
	if err != nil {
		return false, err
	}
	if p != nil {
		defer p.Close()
		if err := p.remove(index); err != nil {
			return false, err
		}
	}
	err = h.FilterDel(ingressFilter(index, 0))
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("detach the fast path from link %d: %w", index, err)
	}
	return true, nil
}

// remove deletes link index's entries: its ports entry, and the peers entries it
// names if they still point at the link (a later port may have its address).
func (p *Path) remove(index int) error {
	value := make([]byte, p.ports.ValueSize())
	err := p.ports.Lookup(uint32(index), value)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range portOf(uint32(index), value).peerEntries() {
		var peer [peerValueSize]byte
		m := e.m(p)
		err = m.Lookup(e.key, peer[:])
		if err == nil && int(binary.NativeEndian.Uint32(peer[0:4])) == index {
			err = m.Delete(e.key)
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("take link %d out of the fast path: %w", index, err)
		}
	}
	if err := p.ports.Delete(uint32(index)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("take link %d out of the fast path: %w", index, err)
	}
	return nil
}

// Ports lists the maps' sources, for gc and doctor.
func (p *Path) Ports() ([]Port, error) {
	var (
		ports []Port
		index uint32
		value [portValueSize]byte
	)
	it := p.ports.Iterate()
	for it.Next(&index, &value) {
		ports = append(ports, portOf(index, value[:]))
	}
	return ports, it.Err()
}

// Forget removes the entries of a port whose link is gone (gc): no filter leads to
// them any more.
func (p *Path) Forget(index int) error { return p.remove(index) }

// Redirects reports whether the program takes packets of protocol proto from link
// from to address dst of link to past the bridge (when they carry from's own MAC and
// address): both run this namespace's program with entries on one bridge, and both
// have dst's family. Trace shows such a probe's hop.
func Redirects(h *netlink.Handle, from, to int, dst netip.Addr, proto uint8) (bool, error) {
	if dst.Is6() && proto != unix.IPPROTO_TCP && proto != unix.IPPROTO_UDP {
		return false, nil
	}
	p, err := find(h, from, true) // the older program redirects IPv4 until gc moves its ports
	if err != nil || p == nil {
		return false, err
	}
	defer p.Close()
	own, err := p.ID()
	if err != nil {
		return false, err
	}
	if id, err := attachedID(h, to); err != nil || id != own {
		return false, err
	}
	fromValue, toValue := make([]byte, p.ports.ValueSize()), make([]byte, p.ports.ValueSize())
	if err := p.ports.Lookup(uint32(from), fromValue); err != nil {
		return false, nil
	}
	if err := p.ports.Lookup(uint32(to), toValue); err != nil {
		return false, nil
	}
	source, dest := portOf(uint32(from), fromValue), portOf(uint32(to), toValue)
	if dst.Is4() {
		return source.Bridge == dest.Bridge && source.IP.IsValid() && dest.IP == dst, nil
	}
	return source.Bridge == dest.Bridge && source.IP6.IsValid() && dest.IP6 == dst, nil
}
