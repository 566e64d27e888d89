package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netlinkFloorTool is the least any tool can do for a container: the veth pair
// (peer born inside), bridge port, address, loopback and default route through
// netlink in this process, without firewall, state or process start. Set beside
// the others it shows which part of their time the kernel itself takes, teardown
// above all (deleting a veth waits for RCU grace periods).
type netlinkFloorTool struct {
	host   *netlink.Handle
	bridge int
}

const floorPrefix = "10.93"

func (*netlinkFloorTool) name() string { return "netlink floor (no firewall)" }

func (t *netlinkFloorTool) prepare(ctx context.Context, r *setupRun) error {
	ns, err := netns.GetFromPath(r.lab.hostPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	if t.host, err = netlink.NewHandleAt(ns); err != nil {
		return err
	}
	r.lab.clean.Push("netlink handle", func() error { t.host.Close(); return nil })
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "flbr0"}}
	if err := t.host.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge: %w", err)
	}
	addr, err := netlink.ParseAddr(floorPrefix + ".0.1/16")
	if err != nil {
		return err
	}
	if err := t.host.AddrAdd(br, addr); err != nil {
		return err
	}
	if err := t.host.LinkSetUp(br); err != nil {
		return err
	}
	t.bridge = br.Attrs().Index
	return nil
}

func floorVeth(i int) string { return "fl" + strconv.Itoa(i) }

func (t *netlinkFloorTool) add(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	ns, err := netns.GetFromPath(r.lab.containerNSPath(i))
	if err != nil {
		return err
	}
	defer ns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: floorVeth(i), MasterIndex: t.bridge},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	if err := t.host.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth: %w", err)
	}
	if err := t.host.LinkSetUp(veth); err != nil {
		return err
	}
	inside, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer inside.Close()
	lo, err := inside.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := inside.LinkSetUp(lo); err != nil {
		return err
	}
	eth0, err := inside.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(indexAddr(floorPrefix, i) + "/16")
	if err != nil {
		return err
	}
	if err := inside.AddrAdd(eth0, addr); err != nil {
		return err
	}
	if err := inside.LinkSetUp(eth0); err != nil {
		return err
	}
	return inside.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP(floorPrefix + ".0.1")})
}

func (t *netlinkFloorTool) del(ctx context.Context, w *nsThread, r *setupRun, i int) error {
	return t.host.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: floorVeth(i)}})
}

func (*netlinkFloorTool) netns(r *setupRun, i int) (string, error) {
	return r.lab.containerNSPath(i), nil
}

// It publishes no port and masquerades nothing: there is nothing to check.
func (*netlinkFloorTool) unchecked() {}
