package link

import (
	"errors"
	"fmt"
	"math"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/bandwidth"
	"github.com/ctnet/ctnet/internal/fault"
	"github.com/ctnet/ctnet/netns"
)

// Shaping is the traffic control of one container interface, set on its host veth:
// what enters the container leaves the host by the veth, so a token bucket (tbf) as
// the veth's root qdisc limits it; what leaves the container enters the host by the
// veth, where no qdisc queues, so the veth's ingress redirects it to an ifb device,
// whose root tbf limits it — as CNI's bandwidth plugin does.
type Shaping struct {
	HostVeth string
	// IFB names the ifb device for the egress limit; with no egress limit there is
	// none.
	IFB string
	// Alias is the ifb's owner tag, set once it is complete, as a veth's.
	Alias  string
	MTU    int
	Limits bandwidth.Limits
}

// latencyUsec is how long a packet may wait in a bucket's queue before it is dropped,
// CNI's bandwidth plugin's: it sizes the queue (tbf's limit).
const latencyUsec = 25_000

// Shape sets up the shaping of a host veth whose container end is configured. On
// error it leaves no ifb behind; the veth's qdiscs go with the veth, which the
// caller's undo deletes. A crash point follows each change. An ifb of the name that
// ctnet left behind (of its group) is made again; another link of that name is a
// conflict.
func Shape(host *netns.NS, s Shaping) (err error) {
	if j := host.Journal(); j != nil {
		return j.Unsupported("bandwidth limits")
	}
	h, err := host.Netlink()
	if err != nil {
		return err
	}
	veth, err := h.LinkByName(s.HostVeth)
	if err != nil {
		return fmt.Errorf("find %s to shape it: %w", s.HostVeth, err)
	}
	if s.Limits.IngressRate > 0 {
		if err := h.QdiscReplace(tbf(veth.Attrs().Index, s.Limits.IngressRate, s.Limits.IngressBurst)); err != nil {
			return fmt.Errorf("limit ingress of %s: %w", s.HostVeth, err)
		}
		fault.Point("limit ingress of " + s.HostVeth)
	}
	if s.Limits.EgressRate == 0 {
		return nil
	}
	ifb, err := addIFB(host, s.IFB, s.MTU)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if derr := Delete(host, s.IFB); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	if err := h.QdiscReplace(tbf(ifb.Attrs().Index, s.Limits.EgressRate, s.Limits.EgressBurst)); err != nil {
		return fmt.Errorf("limit egress on %s: %w", s.IFB, err)
	}
	fault.Point("limit egress on " + s.IFB)
	ingress := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: veth.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
	if err := h.QdiscReplace(ingress); err != nil {
		return fmt.Errorf("add ingress qdisc to %s: %w", s.HostVeth, err)
	}
	fault.Point("add ingress qdisc to " + s.HostVeth)
	redirect := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: veth.Attrs().Index, Parent: ingress.Handle, Priority: 1, Protocol: unix.ETH_P_ALL},
		ClassId:     netlink.MakeHandle(1, 1),
		Actions:     []netlink.Action{netlink.NewMirredAction(ifb.Attrs().Index)},
	}
	if err := h.FilterReplace(redirect); err != nil {
		return fmt.Errorf("redirect %s's ingress to %s: %w", s.HostVeth, s.IFB, err)
	}
	fault.Point("redirect ingress of " + s.HostVeth + " to " + s.IFB + " untagged")
	if err := h.LinkSetAlias(ifb, s.Alias); err != nil {
		return fmt.Errorf("tag %s: %w", s.IFB, err)
	}
	return nil
}

// addIFB creates an ifb device of ctnet's group with IPv6 off, up, or makes again
// one that ctnet left behind.
func addIFB(host *netns.NS, name string, mtu int) (netlink.Link, error) {
	h, err := host.Netlink()
	if err != nil {
		return nil, err
	}
	if old, err := h.LinkByName(name); err == nil {
		if _, _, ours := Owner(old); !ours || old.Type() != "ifb" {
			return nil, fmt.Errorf("create ifb %s: an interface of type %s that is not ctnet's already has that name", name, old.Type())
		}
		// Left by an interrupted command, or a shaping being made again (gc).
		if err := Delete(host, name); err != nil {
			return nil, err
		}
	} else if !isNotFound(err) {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	attrs := netlink.NewLinkAttrs()
	// Down until IPv6 is off, as every link ctnet makes: it is on no segment.
	attrs.Name, attrs.MTU, attrs.Group, attrs.TxQLen = name, mtu, Group, 1000
	if err := h.LinkAdd(&netlink.Ifb{LinkAttrs: attrs}); err != nil {
		return nil, fmt.Errorf("create ifb %s: %w", name, err)
	}
	fault.Point("create ifb " + name + " untagged")
	l, err := h.LinkByName(name)
	if err == nil {
		err = disableIPv6(host, name)
	}
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("set up ifb %s: %w", name, err), Delete(host, name))
	}
	return l, nil
}

// tbf is a root token bucket on a link: rate in bits per second, burst in bits (0:
// the default for the rate). The kernel takes the bucket's depth in clock ticks and
// its queue in bytes, each in 32 bits: a larger burst is cut to what they hold. The
// queue is the depth the ticks hold and latencyUsec at the rate: sized from the
// burst as given, a cut one (containerd's 2^32-1 bits at 10 Mbit/s) would leave its
// excess as a queue that keeps packets minutes.
func tbf(index int, rate, burst uint64) *netlink.Tbf {
	if burst == 0 {
		burst = bandwidth.DefaultBurst(rate)
	}
	rateBytes, burstBytes := float64(rate/8), float64(burst/8)
	bufferTicks := min(burstBytes*netlink.TIME_UNITS_PER_SEC/rateBytes*netlink.TickInUsec(), math.MaxUint32)
	depth := bufferTicks / netlink.TickInUsec() / netlink.TIME_UNITS_PER_SEC * rateBytes
	limit := min(rateBytes*latencyUsec/netlink.TIME_UNITS_PER_SEC+depth, math.MaxUint32)
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate:       rate / 8, Buffer: uint32(bufferTicks), Limit: uint32(limit),
	}
}

// Shaped reports whether a host veth and its ifb still have the shaping s describes:
// each limited direction's token bucket at its rate, the ifb tagged, the veth's
// ingress redirected. Anything else (a qdisc deleted or replaced by hand) is for the
// caller to make again.
func Shaped(host *netns.NS, s Shaping) (bool, error) {
	h, err := host.Netlink()
	if err != nil {
		return false, err
	}
	veth, err := h.LinkByName(s.HostVeth)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if s.Limits.IngressRate > 0 {
		if ok, err := hasTBF(h, veth, s.Limits.IngressRate); err != nil || !ok {
			return false, err
		}
	}
	if s.Limits.EgressRate == 0 {
		return true, nil
	}
	ifb, err := h.LinkByName(s.IFB)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil || ifb.Attrs().Alias != s.Alias {
		return false, err
	}
	if ok, err := hasTBF(h, ifb, s.Limits.EgressRate); err != nil || !ok {
		return false, err
	}
	filters, err := retryDump(func() ([]netlink.Filter, error) { return h.FilterList(veth, netlink.MakeHandle(0xffff, 0)) })
	if err != nil {
		return false, fmt.Errorf("list filters of %s: %w", s.HostVeth, err)
	}
	for _, f := range filters {
		if u, ok := f.(*netlink.U32); ok && len(u.Actions) == 1 {
			if m, ok := u.Actions[0].(*netlink.MirredAction); ok && m.Ifindex == ifb.Attrs().Index {
				return true, nil
			}
		}
	}
	return false, nil
}

// hasTBF reports whether a link's root qdisc is a token bucket at rate (bits per
// second).
func hasTBF(h *netlink.Handle, l netlink.Link, rate uint64) (bool, error) {
	qdiscs, err := retryDump(func() ([]netlink.Qdisc, error) { return h.QdiscList(l) })
	if err != nil {
		return false, fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qdiscs {
		if t, ok := q.(*netlink.Tbf); ok && t.Parent == netlink.HANDLE_ROOT {
			return t.Rate == rate/8, nil
		}
	}
	return false, nil
}
