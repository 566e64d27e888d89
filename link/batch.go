package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/netns"
)

// loopbackIndex is lo's interface index in every network namespace: the kernel
// registers it first, with this index, when it makes the namespace.
const loopbackIndex = 1

// request is one rtnetlink request of a batch, with what its failure means.
type request struct {
	req    *nl.NetlinkRequest
	change netns.Change // the request as a command line
	fail   func(error) error
}

// sendBatch sends the requests in one message and waits for every acknowledgement.
// The kernel handles them in order and goes on after one fails, so every request
// must be one that the caller's undo reverses as a whole (all of them are on one
// interface, which the undo deletes). It returns the first failure. A journal
// prints the requests' lines in order before they go.
func sendBatch(ns *netns.NS, reqs []request) error {
	changes := make([]netns.Change, len(reqs))
	for i, r := range reqs {
		changes[i] = r.change
	}
	return ns.Changes(changes, func() error { return send(ns, reqs) })
}

// send is sendBatch's sending, past the journal.
func send(ns *netns.NS, reqs []request) error {
	sock, err := ns.RouteSocket()
	if err != nil {
		return err
	}
	var buf []byte
	pending := map[uint32]int{}
	for i, r := range reqs {
		buf = append(buf, r.req.Serialize()...)
		pending[r.req.Seq] = i
	}
	fd := sock.Socket.GetFd()
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	errs := make([]error, len(reqs))
	for len(pending) > 0 {
		msgs, _, err := sock.Socket.Receive()
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		for _, m := range msgs {
			i, ok := pending[m.Header.Seq]
			if !ok || m.Header.Type != unix.NLMSG_ERROR {
				continue // an answer to an earlier request that gave up waiting
			}
			delete(pending, m.Header.Seq)
			if len(m.Data) < 4 {
				errs[i] = reqs[i].fail(errors.New("short netlink acknowledgement"))
				continue
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				errs[i] = reqs[i].fail(syscall.Errno(-code))
			}
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// routeRequest is a request of type typ with flags, to be sent on ns's rtnetlink
// socket.
func routeRequest(ns *netns.NS, typ, flags int) (*nl.NetlinkRequest, error) {
	sock, err := ns.RouteSocket()
	if err != nil {
		return nil, err
	}
	req := nl.NewNetlinkRequest(typ, flags)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: sock}
	return req, nil
}

// linkUpRequest brings the interface with index up.
func linkUpRequest(index int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	req.AddData(msg)
	return req
}

// addrRequest adds address (with its prefix length) to the interface with index; an
// IPv4 address gets its subnet's broadcast address, as ip addr add ... brd + does.
func addrRequest(index int, address netip.Prefix, flags uint8) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	family := unix.AF_INET6
	if address.Addr().Is4() {
		family = unix.AF_INET
	}
	msg := nl.NewIfAddrmsg(family)
	msg.Index = uint32(index)
	msg.Prefixlen = uint8(address.Bits())
	msg.Flags = flags
	req.AddData(msg)
	ip := address.Addr().AsSlice()
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, ip))
	req.AddData(nl.NewRtAttr(unix.IFA_ADDRESS, ip))
	if address.Addr().Is4() && address.Bits() < 31 {
		broadcast := make([]byte, 4)
		mask := ipNet(address).Mask
		for i := range broadcast {
			broadcast[i] = ip[i] | ^mask[i]
		}
		req.AddData(nl.NewRtAttr(unix.IFA_BROADCAST, broadcast))
	}
	return req
}

// defaultRouteRequest adds a default route via gateway out of the interface with index.
func defaultRouteRequest(index int, gateway netip.Addr) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	msg := nl.NewRtMsg()
	msg.Family = unix.AF_INET6
	if gateway.Is4() {
		msg.Family = unix.AF_INET
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, gateway.AsSlice()))
	req.AddData(nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(index))))
	return req
}
