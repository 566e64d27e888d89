package network

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/fastpath"
	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
)

// TraceSpec is the probe Trace follows.
type TraceSpec struct {
	// From is a container's name or ID, or "host".
	From string
	// To is a container's name or ID or an IP address, optionally with ":PORT"
	// ("[ADDR]:PORT" for an IPv6 address).
	To    string
	Port  uint16
	Proto string // tcp, udp or icmp (an ICMPv6 echo over IPv6); empty: tcp with a port, icmp without
	// Family is the probe's IP version, 4 or 6. Zero: the address's, and for a
	// container IPv4 when the sender shares it, else IPv6.
	Family int
	// Wait is how long the probe may take to be delivered or dropped; zero is
	// DefaultTraceWait. A probe that leaves the host is followed for all of it.
	Wait time.Duration
}

// TraceHop is one step of the probe: a chain of a namespace that saw it and what
// that chain decided.
type TraceHop struct {
	Namespace string `json:"namespace"`
	Hook      string `json:"hook"`
	In        string `json:"in,omitempty"`
	Out       string `json:"out,omitempty"`
	Packet    string `json:"packet"`
	// Conntrack is the packet's conntrack state as the chain saw it (new,
	// established, related, untracked; with dnat or snat when its connection is
	// translated), empty before conntrack has seen it.
	Conntrack string `json:"conntrack,omitempty"`
	Table     string `json:"table"`
	Chain     string `json:"chain"`
	Rule      string `json:"rule,omitempty"`
	Verdict   string `json:"verdict"`
}

// TraceResult is what became of a probe: its hops, the translations it met in
// ctnet's terms, and the outcome, whose last word Delivered sums up.
type TraceResult struct {
	Hops      []TraceHop `json:"hops"`
	Notes     []string   `json:"notes"`
	Outcome   string     `json:"outcome"`
	Delivered bool       `json:"delivered"`
}

// DefaultTraceWait bounds a trace: a probe neither delivered nor dropped within it is
// lost (TCP's first retransmission comes after a second, so one probe is one SYN).
const DefaultTraceWait = 900 * time.Millisecond

// traceSeq tells apart the traces one process runs at once (a program that calls
// Trace from several goroutines).
var traceSeq atomic.Uint64

// traceNS is one namespace on the probe's path.
type traceNS struct {
	label    string
	ns       *netns.NS
	close    bool // opened for the trace
	listener *firewall.TraceListener
	tables   bool
	chains   map[string]string // family/table/chain → hook
	names    map[uint32]string
}

type tracedEvent struct {
	at int // index of the namespace
	firewall.TraceEvent
}

// traceTarget is where the probe goes, resolved from the spec against the store.
type traceTarget struct {
	addr      netip.Addr
	port      uint16
	proto     byte       // ICMP's is ICMPv6 to an IPv6 address
	protoName string     // as the spec names it, but icmpv6 for ICMPv6
	container *Container // the container the address is, if any
	published *Port      // the published port the probe is for, if any
	dnatTo    *Container // its container
}

// Trace sends one real probe from spec.From to spec.To and follows it through the
// firewall of every namespace on its way with the kernel's nftables tracing: each
// namespace gets a temporary table that marks the probe (the kernel clears the mark
// at every namespace crossing), and the trace events are read from each. The tables
// are removed before Trace returns, also when ctx is cancelled; a process killed
// before that leaves them to gc (their names carry its identity).
func (m *Manager) Trace(ctx context.Context, spec TraceSpec) (res *TraceResult, err error) {
	if m.rootless {
		return nil, errors.New("trace needs root: user-mode networks have no firewall of ctnet's to trace")
	}
	containers, err := m.Containers(false)
	if err != nil {
		return nil, err
	}
	networks, err := m.Networks()
	if err != nil {
		return nil, err
	}
	var path []*traceNS
	defer func() {
		for _, p := range path {
			if p.listener != nil {
				p.listener.Close()
			}
			if p.close {
				p.ns.Close()
			}
		}
	}()
	var src *Container
	if spec.From != "host" {
		if src = findContainer(containers, spec.From); src == nil {
			return nil, badField("From", spec.From, "no running container %s (name, ID or \"host\")", spec.From)
		}
		if src.NetNS == "" || src.Mode == ModeUserNet {
			return nil, badField("From", spec.From, "container %s has no network namespace of ctnet's to send from", spec.From)
		}
	}
	target, err := resolveTraceTarget(spec, src, containers)
	if err != nil {
		return nil, err
	}
	add := func(label string, c *Container) error {
		for _, p := range path {
			if p.label == label {
				return nil
			}
		}
		p := &traceNS{label: label, ns: m.host, chains: map[string]string{}, names: map[uint32]string{}}
		if c != nil && c.Mode != ModeHost {
			ns, err := netns.Open(c.NetNS)
			if err != nil {
				return err
			}
			p.ns, p.close = ns, true
		}
		path = append(path, p)
		return nil
	}
	if src != nil {
		if err := add(src.Name, src); err != nil {
			return nil, err
		}
	}
	if err := add("host", nil); err != nil {
		return nil, err
	}
	for _, c := range []*Container{target.container, target.dnatTo} {
		if c != nil {
			if err := add(c.Name, c); err != nil {
				return nil, err
			}
		}
	}
	rules, err := m.traceRules()
	if err != nil {
		return nil, err
	}
	fast, err := m.fastPathHop(src, target)
	if err != nil {
		return nil, err
	}
	id := proc.Self()
	table := firewall.TraceTableName(id.PID, id.StartTime, traceSeq.Add(1))
	probe := firewall.Probe{Proto: target.proto, To: []netip.Addr{target.addr}}
	if target.published != nil {
		probe.To = append(probe.To, target.published.ContainerIP)
	}
	for _, p := range path {
		if p.listener, err = firewall.ListenTrace(p.ns); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, p := range path {
			if !p.tables {
				continue
			}
			if conn, cerr := p.ns.NFT(); cerr != nil {
				err = errors.Join(err, cerr)
			} else if derr := firewall.DeleteTraceTables(conn, table); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	sock, err := openProbe(path[0].ns, &probe, target.addr)
	if err != nil {
		return nil, err
	}
	defer unix.Close(sock)
	for _, p := range path {
		conn, err := p.ns.NFT()
		if err != nil {
			return nil, err
		}
		p.tables = true // also when adding fails halfway: the delete above is harmless
		if err := firewall.AddTraceTables(conn, table, probe); err != nil {
			return nil, err
		}
		if err := p.readChains(conn); err != nil {
			return nil, err
		}
	}
	events := make(chan tracedEvent, 256)
	if spec.Wait <= 0 {
		spec.Wait = DefaultTraceWait
	}
	deadline := time.Now().Add(spec.Wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := make(chan struct{})
	defer close(stop)
	for i, p := range path {
		go func() {
			for {
				evs, err := p.listener.Receive(deadline)
				if err != nil {
					return
				}
				for _, ev := range evs {
					select {
					case events <- tracedEvent{i, ev}:
					case <-stop:
						return
					}
				}
			}
		}()
	}
	// A probe that a chain of the sender's own drops makes the send fail with EPERM,
	// after the chain's events: those say why.
	if err := sendProbe(sock, target, probe); err != nil && !errors.Is(err, unix.EPERM) {
		return &TraceResult{Hops: []TraceHop{}, Notes: []string{},
			Outcome: fmt.Sprintf("not sent: %s cannot send to %s: %v", path[0].label, target.addr, err)}, nil
	}
	var got []tracedEvent
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	settled := false
collect:
	for {
		select {
		case ev := <-events:
			got = append(got, ev)
			if !settled && m.traceSettled(path, ev, table, networks) {
				// The other namespaces' events of the same packet are already queued.
				settled = true
				timer.Reset(50 * time.Millisecond)
			}
		case <-timer.C:
			break collect
		case <-ctx.Done():
			return nil, fmt.Errorf("trace interrupted: %w", ctx.Err())
		}
	}
	res = m.explainTrace(path, got, table, rules, target, networks)
	if fast != nil {
		insertFastPathHop(res, path[0].label, fast)
	}
	return res, nil
}

// fastPathHop is the hop of a probe between two containers of one network that the
// fast path redirects past the bridge (package fastpath), where the host's chains
// never see it; nil when the bridge carries it.
func (m *Manager) fastPathHop(src *Container, t *traceTarget) (*TraceHop, error) {
	if src == nil || t.container == nil {
		return nil, nil
	}
	for _, a := range src.Attachments {
		for _, b := range t.container.Attachments {
			if a.NetworkID != b.NetworkID || b.IP != t.addr && b.IP6 != t.addr || a.HostVeth == "" || b.HostVeth == "" {
				continue
			}
			from, err := link.ByName(m.host, a.HostVeth)
			if err != nil {
				return nil, nil
			}
			to, err := link.ByName(m.host, b.HostVeth)
			if err != nil {
				return nil, nil
			}
			h, err := m.host.Netlink()
			if err != nil {
				return nil, err
			}
			if ok, err := fastpath.Redirects(h, from.Attrs().Index, to.Attrs().Index, t.addr, t.proto); err != nil || !ok {
				return nil, err
			}
			return &TraceHop{Namespace: "host", Hook: "tc ingress", In: a.HostVeth, Out: b.HostVeth,
				Table: "fast path", Chain: "ebpf " + a.HostVeth,
				Rule:    fmt.Sprintf("only from %s's own MAC and address, to %s's on network %s (as bridge ctnet would deliver it)", src.Name, t.container.Name, a.Network),
				Verdict: "redirect past the bridge into " + t.container.Name + "'s " + b.IfName}, nil
		}
	}
	return nil, nil
}

// insertFastPathHop puts the fast path's hop after the sender's own hops, with its
// packet as the sender's last hop shows it.
func insertFastPathHop(res *TraceResult, sender string, hop *TraceHop) {
	i := 0
	for i < len(res.Hops) && res.Hops[i].Namespace == sender {
		hop.Packet = res.Hops[i].Packet
		i++
	}
	if i == 0 || i == len(res.Hops) {
		return // it never reached another namespace: no redirect to show
	}
	res.Hops = slices.Insert(res.Hops, i, *hop)
	res.Notes = append(res.Notes, "the fast path took it past the bridge, whose chains show no hop (ctnet gc with CTNET_FASTPATH=off puts containers back on the bridge)")
}

// traceSettled reports whether ev ends the probe's way: a drop, its arrival at a
// namespace's input hook (the host's, a container's, its own sender's by a published
// port), or its leaving the host by an interface that is not a bridge of ctnet's.
func (m *Manager) traceSettled(path []*traceNS, ev tracedEvent, table string, networks []*Network) bool {
	if ev.Table != table {
		return isDrop(ev.TraceEvent)
	}
	switch ev.Chain {
	case firewall.TraceSeenInput:
		return true
	case firewall.TraceSeenPost:
		p := path[ev.at]
		out := p.ifName(ev.OIF)
		return p.ns == m.host && ev.Family == nftables.TableFamilyINet && out != "" && out != "lo" && !isBridgeOf(out, networks)
	}
	return false
}

func isDrop(ev firewall.TraceEvent) bool {
	if ev.Type == unix.NFT_TRACETYPE_POLICY {
		return ev.Policy == firewall.VerdictDrop
	}
	return ev.Type == unix.NFT_TRACETYPE_RULE && ev.Verdict == firewall.VerdictDrop
}

// traceRules are ctnet's rules in the host's namespace, by handle.
func (m *Manager) traceRules() (map[firewall.RuleKey]firewall.Rule, error) {
	conn, err := m.host.NFT()
	if err != nil {
		return nil, err
	}
	return firewall.Rules(conn)
}

// readChains records the hook of every base chain of the namespace.
func (p *traceNS) readChains(conn *nftables.Conn) error {
	chains, err := conn.ListChains()
	if err != nil {
		return fmt.Errorf("list chains in %s: %w", p.label, err)
	}
	for _, ch := range chains {
		if ch.Hooknum != nil && ch.Table != nil {
			p.chains[chainKey(ch.Table.Family, ch.Table.Name, ch.Name)] = hookName(uint32(*ch.Hooknum))
		}
	}
	return nil
}

func chainKey(f nftables.TableFamily, table, chain string) string {
	return fmt.Sprintf("%d/%s/%s", f, table, chain)
}

func hookName(h uint32) string {
	names := []string{"prerouting", "input", "forward", "output", "postrouting"}
	if int(h) < len(names) {
		return names[h]
	}
	return "hook " + strconv.Itoa(int(h))
}

func (p *traceNS) ifName(index uint32) string {
	if index == 0 {
		return ""
	}
	if name, ok := p.names[index]; ok {
		return name
	}
	name := "#" + strconv.Itoa(int(index))
	if h, err := p.ns.Netlink(); err == nil {
		if l, err := h.LinkByIndex(int(index)); err == nil {
			name = l.Attrs().Name
		}
	}
	p.names[index] = name
	return name
}

func findContainer(containers []*Container, ref string) *Container {
	for _, c := range containers {
		if c.Name == ref || c.ID == ref || (len(ref) >= 4 && strings.HasPrefix(c.ID, ref)) {
			return c
		}
	}
	return nil
}

func resolveTraceTarget(spec TraceSpec, src *Container, containers []*Container) (*traceTarget, error) {
	if spec.Family != 0 && spec.Family != 4 && spec.Family != 6 {
		return nil, badField("Family", strconv.Itoa(spec.Family), "the IP version is 4 or 6")
	}
	t := &traceTarget{port: spec.Port}
	ref := strings.TrimSuffix(strings.TrimPrefix(spec.To, "["), "]")
	if host, port, err := net.SplitHostPort(spec.To); err == nil {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return nil, badField("To", spec.To, "%q is not a port number", port)
		}
		if spec.Port != 0 && uint16(p) != spec.Port {
			return nil, badField("Port", strconv.Itoa(int(spec.Port)), "it differs from the port in %s", spec.To)
		}
		ref, t.port = host, uint16(p)
	}
	t.protoName = spec.Proto
	if t.protoName == "" {
		t.protoName = "icmp"
		if t.port != 0 {
			t.protoName = "tcp"
		}
	}
	switch t.protoName {
	case "tcp":
		t.proto = unix.IPPROTO_TCP
	case "udp":
		t.proto = unix.IPPROTO_UDP
	case "icmp":
		if t.port != 0 {
			return nil, badField("Port", strconv.Itoa(int(t.port)), "ICMP has no ports: leave the port out, or choose --proto tcp or udp")
		}
	default:
		return nil, badField("Proto", spec.Proto, "unknown protocol %q: use tcp, udp or icmp", spec.Proto)
	}
	if t.protoName != "icmp" && t.port == 0 {
		return nil, badField("Port", "", "a %s probe needs a port: --port N, or ADDR:PORT", t.protoName)
	}
	if addr, err := netip.ParseAddr(ref); err == nil {
		t.addr = addr.Unmap()
		if spec.Family != 0 && ipVersion(t.addr) != spec.Family {
			return nil, badField("To", spec.To, "%s is an IPv%d address, and -%d asks for IPv%[3]d: leave the flag out", ref, ipVersion(t.addr), spec.Family)
		}
		for _, c := range containers {
			for _, a := range c.Attachments {
				if a.IP == t.addr || a.IP6 == t.addr {
					t.container = c
				}
			}
		}
	} else {
		if t.container = findContainer(containers, ref); t.container == nil {
			return nil, badField("To", spec.To, "no running container %s, and not an IP address", ref)
		}
		t.addr = containerAddrFor(t.container, src, spec.Family)
		switch {
		case t.addr.IsValid():
		case spec.Family == 6:
			return nil, badField("To", spec.To, "container %s has no IPv6 address: trace it without -6, or connect it to a network made with --ipv6", ref)
		case spec.Family == 4:
			return nil, badField("To", spec.To, "container %s has no IPv4 address (its networks are IPv6-only): trace it without -4", ref)
		default:
			return nil, badField("To", spec.To, "container %s has no address on a ctnet network", ref)
		}
	}
	if t.protoName == "icmp" {
		t.proto = unix.IPPROTO_ICMP
		if t.addr.Is6() {
			t.proto, t.protoName = unix.IPPROTO_ICMPV6, "icmpv6"
		}
		return t, nil
	}
	if t.container == nil {
		for _, c := range containers {
			for i, p := range c.Ports {
				// A dual-stack port is two: 0.0.0.0's to the container's IPv4
				// address and [::]'s to its IPv6 one; the probe takes its family's.
				if p.Proto == t.protoName && p.HostPort == t.port && p.ContainerIP.Is4() == t.addr.Is4() && (!p.HostIP.IsValid() || p.HostIP.IsUnspecified() || p.HostIP == t.addr) {
					t.published, t.dnatTo = &c.Ports[i], c
				}
			}
		}
	}
	return t, nil
}

func ipVersion(addr netip.Addr) int {
	if addr.Is4() {
		return 4
	}
	return 6
}

// containerAddrFor is c's address that src's probe goes to: of the IP version
// family when it is not zero, else IPv4 when src (or the host, src nil) has it too,
// else IPv6, else whatever c has; on a network they share first. Invalid when c has
// no address of family.
func containerAddrFor(c, src *Container, family int) netip.Addr {
	families := []int{family}
	if family == 0 {
		families = []int{4, 6}
	}
	addrOf := func(a Attachment, family int) netip.Addr {
		if family == 4 {
			return a.IP
		}
		return a.IP6
	}
	sharedBy := func(a Attachment, family int) bool {
		for _, b := range src.Attachments {
			if b.NetworkID == a.NetworkID && addrOf(b, family).IsValid() {
				return true
			}
		}
		return false
	}
	hasFamily := func(family int) bool {
		return src == nil || slices.ContainsFunc(src.Attachments, func(b Attachment) bool { return addrOf(b, family).IsValid() })
	}
	for _, pass := range []func(Attachment, int) bool{
		func(a Attachment, f int) bool { return src != nil && sharedBy(a, f) },
		func(_ Attachment, f int) bool { return hasFamily(f) },
		func(Attachment, int) bool { return true },
	} {
		for _, f := range families {
			for _, a := range c.Attachments {
				if addrOf(a, f).IsValid() && pass(a, f) {
					return addrOf(a, f)
				}
			}
		}
	}
	return netip.Addr{}
}

// openProbe makes the probe's socket to dst inside ns and picks its identifier: a
// random source port that no socket there holds (bound to it), or a random ICMP echo
// identifier (in the packet a raw socket writes).
func openProbe(ns *netns.NS, p *firewall.Probe, dst netip.Addr) (int, error) {
	family := unix.AF_INET
	if dst.Is6() {
		family = unix.AF_INET6
	}
	var fd int
	err := ns.Do(func() (err error) {
		switch p.Proto {
		case unix.IPPROTO_TCP:
			fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		case unix.IPPROTO_UDP:
			fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		default:
			fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(p.Proto))
		}
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("open the probe's socket: %w", err)
	}
	for tries := 0; ; tries++ {
		// Above the usual ephemeral range's start, where few servers listen.
		p.ID = uint16(33000 + rand.IntN(28000))
		if p.Proto != unix.IPPROTO_TCP && p.Proto != unix.IPPROTO_UDP {
			return fd, nil
		}
		unspecified := netip.IPv4Unspecified()
		if dst.Is6() {
			unspecified = netip.IPv6Unspecified()
		}
		err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(unspecified, p.ID)))
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) || tries == 20 {
			unix.Close(fd)
			return -1, fmt.Errorf("bind the probe's source port %d: %w", p.ID, err)
		}
	}
}

func sendProbe(fd int, t *traceTarget, p firewall.Probe) error {
	to := sockaddr(netip.AddrPortFrom(t.addr, t.port))
	var err error
	switch t.proto {
	case unix.IPPROTO_TCP:
		if err = unix.Connect(fd, to); errors.Is(err, unix.EINPROGRESS) {
			err = nil
		}
	case unix.IPPROTO_UDP:
		err = unix.Sendto(fd, []byte("ctnet trace\n"), 0, to)
	default:
		err = unix.Sendto(fd, echoRequest(t.proto, p.ID), 0, sockaddr(netip.AddrPortFrom(t.addr, 0)))
	}
	if err != nil {
		return fmt.Errorf("send the probe to %s: %w", t.addr, err)
	}
	return nil
}

// echoRequest is an ICMP echo request, or with proto ICMPv6 an ICMPv6 one, with
// identifier id.
func echoRequest(proto byte, id uint16) []byte {
	b := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'c', 't', 'n', 'e', 't'}
	binary.BigEndian.PutUint16(b[4:], id)
	if proto == unix.IPPROTO_ICMPV6 {
		b[0] = 128
		return b // a raw ICMPv6 socket sums it, the addresses' pseudo-header included
	}
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		sum += w
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[2:], ^uint16(sum))
	return b
}

// explainTrace turns the events into hops and says in ctnet's terms what became of
// the probe.
func (m *Manager) explainTrace(path []*traceNS, events []tracedEvent, table string, rules map[firewall.RuleKey]firewall.Rule, t *traceTarget, networks []*Network) *TraceResult {
	res := &TraceResult{Hops: []TraceHop{}, Notes: []string{}}
	// Each namespace's events in the order it sent them, namespaces in the path's
	// order; but a probe that comes back to the namespace it left (a container
	// reaching its own published port) enters it last.
	back := func(ev tracedEvent) bool {
		if ev.at != 0 {
			return false
		}
		hook := path[0].chains[chainKey(ev.Family, ev.Table, ev.Chain)]
		return hook == "prerouting" || hook == "input"
	}
	var ordered []tracedEvent
	for i := range path {
		for _, ev := range events {
			if ev.at == i && !back(ev) {
				ordered = append(ordered, ev)
			}
		}
	}
	for _, ev := range events {
		if back(ev) {
			ordered = append(ordered, ev)
		}
	}
	// The kernel reports a chain's verdict in events of their own, after one that
	// carries the packet as the chain got it: one hop per chain a packet went
	// through, the packet taken from its first event (or the hook's, for a chain
	// jumped to).
	type seen struct {
		hook              string
		iif, oif          uint32
		network, tport    []byte
		ctState, ctStatus uint32
	}
	packets := map[uint32]*seen{}
	var dropped *TraceHop
	var dropEvent tracedEvent
	var deliveredAt *traceNS
	var leftBy string
	var masqueraded, dnat bool
	var outSource netip.Addr // the source the host's postrouting left the probe with
	var hop *TraceHop
	var hopKey string
	var lastNS *traceNS
	var lastDst netip.Addr
	for _, ev := range ordered {
		p := path[ev.at]
		lastNS = p
		if _, dst := firewall.HeaderAddrs(ev.Network); dst.IsValid() {
			lastDst = dst
		}
		key := fmt.Sprintf("%d/%d/%s", ev.at, ev.ID, chainKey(ev.Family, ev.Table, ev.Chain))
		pk := packets[ev.ID]
		if pk == nil {
			pk = &seen{}
			packets[ev.ID] = pk
		}
		if h := p.chains[chainKey(ev.Family, ev.Table, ev.Chain)]; h != "" {
			pk.hook = h
		}
		if len(ev.Network) > 0 {
			pk.iif, pk.oif, pk.network, pk.tport = ev.IIF, ev.OIF, ev.Network, ev.Transport
			pk.ctState, pk.ctStatus = ev.CTState, ev.CTStatus
		}
		own := ev.Table == table
		if key != hopKey {
			res.Hops = append(res.Hops, TraceHop{Namespace: p.label, Hook: pk.hook, In: p.ifName(pk.iif), Out: p.ifName(pk.oif),
				Packet: describePacket(pk.network, pk.tport, t), Conntrack: describeConntrack(pk.ctState, pk.ctStatus),
				Table: firewall.FamilyName(ev.Family) + " " + ev.Table, Chain: ev.Chain})
			hop, hopKey = &res.Hops[len(res.Hops)-1], key
			if own {
				hop.Table, hop.Chain, hop.Verdict = "", "", "marked"
				if strings.HasPrefix(ev.Chain, "seen_") {
					hop.Verdict = "passed"
				}
				switch {
				case ev.Chain == firewall.TraceSeenInput:
					deliveredAt = p
				case ev.Chain == firewall.TraceSeenPost && p.ns == m.host && ev.Family == nftables.TableFamilyINet:
					outSource, _ = firewall.HeaderAddrs(pk.network)
					if !isBridgeOf(hop.Out, networks) && hop.Out != "lo" {
						leftBy = hop.Out
					}
				}
			}
		}
		if own {
			continue
		}
		switch {
		case ev.Type == unix.NFT_TRACETYPE_POLICY:
			if hop.Verdict == "" {
				hop.Verdict = "policy " + verdictName(int32(ev.Policy), "")
			}
		case ev.Type == unix.NFT_TRACETYPE_RETURN:
			if hop.Verdict == "" {
				hop.Verdict = "return"
			}
		case ev.Handle != 0:
			hop.Verdict = verdictName(ev.Verdict, ev.Target)
			if ev.Table == firewall.TableName && p.ns == m.host {
				r := rules[firewall.RuleKey{Family: ev.Family, Chain: ev.Chain, Handle: ev.Handle}]
				hop.Rule = r.Text
				if r.Comment != "" {
					hop.Rule = strings.TrimSpace(r.Text + "  # " + r.Comment)
				}
				if ev.Chain == "publish" && ev.Verdict == firewall.VerdictAccept {
					dnat = true
				}
				if ev.Chain == "postrouting" && ev.Verdict == firewall.VerdictAccept && strings.Contains(r.Text, "masquerade") {
					masqueraded = true
				}
			}
			if hop.Rule == "" {
				hop.Rule = "handle " + strconv.FormatUint(ev.Handle, 10)
			}
		}
		if isDrop(ev.TraceEvent) {
			dropped, dropEvent = hop, ev
			dropEvent.IIF, dropEvent.OIF = pk.iif, pk.oif
			break
		}
	}
	port, to := "", t.addr.String() // to: the address with the port, as the probe was sent
	if t.port != 0 {
		port = ":" + strconv.Itoa(int(t.port))
		to = netip.AddrPortFrom(t.addr, t.port).String()
	}
	if dnat && t.published != nil {
		port = ":" + strconv.Itoa(int(t.published.ContainerPort))
		res.Notes = append(res.Notes, fmt.Sprintf("DNAT by published port %d to %s%s", t.published.HostPort, t.dnatTo.Name, port))
	}
	if masqueraded && outSource.IsValid() && leftBy == "" {
		res.Notes = append(res.Notes, fmt.Sprintf("masqueraded to %s", outSource))
	}
	switch {
	case dropped != nil:
		res.Outcome = "dropped: " + m.dropReason(path[dropEvent.at], dropEvent.TraceEvent, rules, networks)
	case deliveredAt != nil && deliveredAt.label == "host":
		res.Delivered = true
		res.Outcome = "delivered to the host at " + to
	case deliveredAt != nil:
		res.Delivered = true
		res.Outcome = fmt.Sprintf("delivered to %s%s", deliveredAt.label, port)
	case leftBy != "":
		res.Delivered = true
		res.Outcome = fmt.Sprintf("left the host by %s toward %s", leftBy, to)
		if masqueraded {
			res.Outcome = fmt.Sprintf("masqueraded to %s, out of %s toward %s", outSource, leftBy, to)
		}
	case len(res.Hops) == 0:
		res.Outcome = "lost: no namespace saw the probe (no route to " + t.addr.String() + "?)"
	default:
		last := res.Hops[len(res.Hops)-1]
		res.Outcome = fmt.Sprintf("lost: last seen in %s at %s; %s", last.Namespace, last.Hook, whyLost(lastNS, lastDst))
	}
	return res
}

// dropReason says which of ctnet's rules dropped the probe, in the words of its
// comment, or whose chain did when the table is not ctnet's.
func (m *Manager) dropReason(p *traceNS, ev firewall.TraceEvent, rules map[firewall.RuleKey]firewall.Rule, networks []*Network) string {
	where := fmt.Sprintf("table %s %s chain %s in %s", firewall.FamilyName(ev.Family), ev.Table, ev.Chain, p.label)
	if ev.Table != firewall.TableName || p.ns != m.host {
		return where + ", which is not ctnet's"
	}
	if ev.Chain == "between_networks" {
		from, to := networkOf(p.ifName(ev.IIF), networks), networkOf(p.ifName(ev.OIF), networks)
		return fmt.Sprintf("isolation between networks %s and %s", from, to)
	}
	r := rules[firewall.RuleKey{Family: ev.Family, Chain: ev.Chain, Handle: ev.Handle}]
	if r.Comment != "" {
		return r.Comment + " (" + where + ")"
	}
	return where
}

func networkOf(bridge string, networks []*Network) string {
	for _, n := range networks {
		if n.Bridge == bridge {
			return n.Name
		}
	}
	return bridge
}

func isBridgeOf(name string, networks []*Network) bool {
	for _, n := range networks {
		if n.Bridge == name {
			return true
		}
	}
	return false
}

func verdictName(v int32, target string) string {
	switch v {
	case firewall.VerdictDrop:
		return "drop"
	case firewall.VerdictAccept:
		return "accept"
	case firewall.VerdictContinue:
		return "continue"
	case firewall.VerdictJump:
		return "jump " + target
	case firewall.VerdictGoto:
		return "goto " + target
	case firewall.VerdictReturn:
		return "return"
	}
	return "verdict " + strconv.Itoa(int(v))
}

// describePacket writes the probe as a chain saw it: addresses, and ports for TCP
// and UDP (from the IP header and what follows it).
func describePacket(ip, transport []byte, t *traceTarget) string {
	src, dst := firewall.HeaderAddrs(ip)
	if !src.IsValid() {
		return ""
	}
	if t.port == 0 || len(transport) < 4 {
		return fmt.Sprintf("%s %s > %s", t.protoName, src, dst)
	}
	return fmt.Sprintf("%s %s > %s", t.protoName,
		netip.AddrPortFrom(src, binary.BigEndian.Uint16(transport)), netip.AddrPortFrom(dst, binary.BigEndian.Uint16(transport[2:])))
}

// removeStaleTraceTables removes the trace tables of traces that were killed before
// they could remove their own, in the host's namespace and the live containers'.
func (m *Manager) removeStaleTraceTables(live map[string]*store.Container, say func(string, ...any)) error {
	clean := func(ns *netns.NS, where string) error {
		conn, err := ns.NFT()
		if err != nil {
			return err
		}
		tables, err := firewall.TraceTables(conn)
		if err != nil {
			return err
		}
		done := map[string]bool{}
		for _, t := range tables {
			owner := proc.ID{PID: t.PID, StartTime: t.StartTime, BootID: proc.BootID()}
			if done[t.Name] || (t.StartTime != 0 && owner.Alive()) {
				continue
			}
			if err := firewall.DeleteTraceTables(conn, t.Name); err != nil {
				return err
			}
			done[t.Name] = true
			say("removed trace tables %s in %s: the trace (PID %d) was killed", t.Name, where, t.PID)
		}
		return nil
	}
	if err := clean(m.host, "the host"); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, c := range live {
		if c.NetNS == "" || c.Mode == store.ModeHost || seen[c.NetNS] {
			continue
		}
		seen[c.NetNS] = true
		ns, err := netns.Open(c.NetNS)
		if err != nil {
			continue // gone meanwhile: its tables went with it
		}
		err = clean(ns, "container "+c.Name)
		ns.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func describeConntrack(state, status uint32) string {
	var words []string
	for _, s := range []struct {
		bit  uint32
		name string
	}{{firewall.CTStateNew, "new"}, {firewall.CTStateEstablished, "established"}, {firewall.CTStateRelated, "related"},
		{firewall.CTStateInvalid, "invalid"}, {firewall.CTStateUntracked, "untracked"}} {
		if state&s.bit != 0 {
			words = append(words, s.name)
		}
	}
	if status&firewall.CTStatusDstNAT != 0 {
		words = append(words, "dnat")
	}
	if status&firewall.CTStatusSrcNAT != 0 {
		words = append(words, "snat")
	}
	return strings.Join(words, ",")
}

// whyLost asks the namespace a probe was last seen in how it would send to dst: a
// missing route, or a next hop that does not answer ARP, is where a probe goes that
// no chain dropped.
func whyLost(p *traceNS, dst netip.Addr) string {
	const unknown = "nothing traced dropped it (a route, a neighbour or a socket filter?)"
	h, err := p.ns.Netlink()
	if err != nil || !dst.IsValid() {
		return unknown
	}
	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return fmt.Sprintf("%s has no route to %s", p.label, dst)
	}
	next, dev := dst, p.ifName(uint32(routes[0].LinkIndex))
	if gw, ok := netip.AddrFromSlice(routes[0].Gw); ok && gw.Unmap().IsValid() && !gw.Unmap().IsUnspecified() {
		next = gw.Unmap()
	}
	family, resolution := unix.AF_INET, "ARP"
	if next.Is6() {
		family, resolution = unix.AF_INET6, "neighbour solicitations"
	}
	neighs, err := h.NeighList(routes[0].LinkIndex, family)
	if err != nil {
		return unknown
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == next && n.State&(unix.NUD_INCOMPLETE|unix.NUD_FAILED) != 0 {
			return fmt.Sprintf("nothing answers %s for %s on %s in %s", resolution, next, dev, p.label)
		}
	}
	return unknown
}
