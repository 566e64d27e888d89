package usernet

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// guestMAC is the test container's MAC.
var guestMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x64")

// A container is root in its namespaces and may put any frame on tap0, and a
// kernel module of its own may hand the TAP frames no well-behaved stack makes:
// truncated, shorter than their headers, longer than any read buffer, with
// lying IP and TCP lengths and nonsense in the virtio-net header. The stack
// reads them all, and still answers ARP and TCP afterwards as before them.
func TestMalformedFramesKeepTheStackServing(t *testing.T) {
	guestFD := stackOnSocketPair(t, Config{Resolvers: []netip.AddrPort{}})
	if err := unix.SetNonblock(guestFD, true); err != nil {
		t.Fatal(err)
	}
	guest := os.NewFile(uintptr(guestFD), "guest")
	defer guest.Close()

	send := func(vnet, frame []byte) {
		t.Helper()
		if _, err := guest.Write(append(append([]byte{}, vnet...), frame...)); err != nil {
			t.Fatalf("write %d-byte frame: %v", len(vnet)+len(frame), err)
		}
	}
	noVnet := make([]byte, vnetHdrSize)
	// serving asks the gateway's MAC and opens a TCP connection to the
	// gateway, which refuses it (no AllowHostLoopback): it takes an ARP
	// reply and a TCP reset to the guest.
	serving := func(when string, srcPort uint16) {
		t.Helper()
		send(noVnet, arpRequest())
		send(noVnet, tcpSYN(srcPort, 80, nil))
		var arpOK, rstOK bool
		buf := make([]byte, 1<<17)
		// A stack that died answers nothing; the deadline only keeps the
		// test from hanging then.
		guest.SetReadDeadline(time.Now().Add(30 * time.Second))
		for !arpOK || !rstOK {
			n, err := guest.Read(buf)
			if err != nil {
				t.Fatalf("%s: the stack stopped answering (arp reply %v, tcp reset %v): %v", when, arpOK, rstOK, err)
			}
			eth := header.Ethernet(buf[vnetHdrSize:n])
			switch eth.Type() {
			case header.ARPProtocolNumber:
				arp := header.ARP(eth[header.EthernetMinimumSize:])
				arpOK = arpOK || arp.Op() == header.ARPReply && tcpip.AddrFromSlice(arp.ProtocolAddressSender()) == tcpip.AddrFrom4([4]byte{10, 0, 2, 2})
			case header.IPv4ProtocolNumber:
				ip := header.IPv4(eth[header.EthernetMinimumSize:])
				if ip.Protocol() == uint8(header.TCPProtocolNumber) {
					tcp := header.TCP(ip.Payload())
					rstOK = rstOK || tcp.DestinationPort() == srcPort && tcp.Flags().Contains(header.TCPFlagRst)
				}
			}
		}
	}
	serving("before the malformed frames", 40000)

	gsoHdr := func(flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset uint16) []byte {
		b := []byte{flags, gsoType, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint16(b[2:], hdrLen)
		binary.LittleEndian.PutUint16(b[4:], gsoSize)
		binary.LittleEndian.PutUint16(b[6:], csumStart)
		binary.LittleEndian.PutUint16(b[8:], csumOffset)
		return b
	}
	liar := gsoHdr(vnetHdrFNeedsCsum, vnetHdrGSOTCPv4, 0xffff, 1, 0xffff, 0xffff)
	syn := tcpSYN(40001, 80, nil)
	for _, tc := range []struct {
		name        string
		vnet, frame []byte
	}{
		{"empty", nil, nil},
		{"shorter than the virtio-net header", nil, []byte{1, 2, 3, 4, 5}},
		{"virtio-net header alone", liar, nil},
		{"shorter than an Ethernet header", liar, syn[:13]},
		{"Ethernet header alone", liar, syn[:header.EthernetMinimumSize]},
		{"IPv4 header cut", liar, syn[:header.EthernetMinimumSize+10]},
		{"IPv4 header length past the frame", liar, withIPv4(syn, func(ip header.IPv4) { ip[0] = 0x4f })},
		{"IPv4 total length past the frame", liar, withIPv4(syn, func(ip header.IPv4) { ip.SetTotalLength(0xffff) })},
		{"IPv4 total length below its header", liar, withIPv4(syn, func(ip header.IPv4) { ip.SetTotalLength(4) })},
		{"TCP data offset past the frame", liar, withIPv4(syn, func(ip header.IPv4) { ip.Payload()[12] = 0xf0 })},
		{"TCP data offset below its header", liar, withIPv4(syn, func(ip header.IPv4) { ip.Payload()[12] = 0x10 })},
		{"segmentation of a UDP datagram", gsoHdr(vnetHdrFNeedsCsum, 3, 42, 8, 34, 6), udpFrame(3000)},
		{"segmentation size zero", gsoHdr(0, vnetHdrGSOTCPv4, 54, 0, 0, 0), tcpSYN(40002, 80, make([]byte, 3000))},
		{"frame the size of the head", liar, tcpSYN(40003, 80, make([]byte, frameHeadSize-54))},
		{"frame one byte past the head", liar, tcpSYN(40004, 80, make([]byte, frameHeadSize-53))},
		{"frame at the copy limit", liar, tcpSYN(40005, 80, make([]byte, smallFrameCopyMax-54))},
		{"frame past the copy limit", liar, tcpSYN(40006, 80, make([]byte, smallFrameCopyMax-53))},
		{"frame longer than the read buffers", liar, withIPv4(tcpSYN(40007, 80, make([]byte, 70000)), func(ip header.IPv4) { ip.SetTotalLength(0xffff) })},
		{"IPv6 with a chain of unknown extension headers", liar, ipv6Garbage()},
	} {
		send(tc.vnet, tc.frame)
	}
	// Random bytes behind a valid Ethernet header to the gateway, of every
	// length class, with random virtio-net headers.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		frame := make([]byte, header.EthernetMinimumSize+rng.IntN(70000))
		for k := range frame {
			frame[k] = byte(rng.Uint32())
		}
		header.Ethernet(frame).Encode(&header.EthernetFields{SrcAddr: guestMAC, DstAddr: gatewayMAC,
			Type: []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber, header.IPv6ProtocolNumber, header.ARPProtocolNumber}[i%3]})
		if i%3 != 2 {
			frame[header.EthernetMinimumSize] = frame[header.EthernetMinimumSize]&0x0f | []byte{0x40, 0x60}[i%3]
		}
		vnet := make([]byte, vnetHdrSize)
		for k := range vnet {
			vnet[k] = byte(rng.Uint32())
		}
		send(vnet, frame)
	}
	serving("after the malformed frames", 40010)
}

func ethFrame(typ tcpip.NetworkProtocolNumber, payload []byte) []byte {
	frame := make([]byte, header.EthernetMinimumSize+len(payload))
	header.Ethernet(frame).Encode(&header.EthernetFields{SrcAddr: guestMAC, DstAddr: gatewayMAC, Type: typ})
	copy(frame[header.EthernetMinimumSize:], payload)
	return frame
}

func arpRequest() []byte {
	arp := header.ARP(make([]byte, header.ARPSize))
	arp.SetIPv4OverEthernet()
	arp.SetOp(header.ARPRequest)
	copy(arp.HardwareAddressSender(), guestMAC)
	copy(arp.ProtocolAddressSender(), []byte{10, 0, 2, 100})
	copy(arp.ProtocolAddressTarget(), []byte{10, 0, 2, 2})
	frame := ethFrame(header.ARPProtocolNumber, arp)
	copy(frame, "\xff\xff\xff\xff\xff\xff")
	return frame
}

// tcpSYN is a SYN from 10.0.2.100 to the gateway 10.0.2.2 carrying data.
func tcpSYN(srcPort, dstPort uint16, data []byte) []byte {
	ip := header.IPv4(make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+len(data)))
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(min(len(ip), 0xffff)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 2, 100}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 2, 2})})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(ip.Payload())
	tcp.Encode(&header.TCPFields{SrcPort: srcPort, DstPort: dstPort, SeqNum: 1, DataOffset: header.TCPMinimumSize,
		Flags: header.TCPFlagSyn, WindowSize: 65535})
	copy(tcp[header.TCPMinimumSize:], data)
	return ethFrame(header.IPv4ProtocolNumber, ip)
}

func udpFrame(size int) []byte {
	ip := header.IPv4(make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+size))
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(ip)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 2, 100}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 2, 2})})
	header.UDP(ip.Payload()).Encode(&header.UDPFields{SrcPort: 5000, DstPort: 53, Length: uint16(len(ip.Payload()))})
	return ethFrame(header.IPv4ProtocolNumber, ip)
}

// withIPv4 returns a copy of frame whose IPv4 packet edit has changed.
func withIPv4(frame []byte, edit func(header.IPv4)) []byte {
	frame = append([]byte{}, frame...)
	edit(header.IPv4(frame[header.EthernetMinimumSize:]))
	return frame
}

func ipv6Garbage() []byte {
	ip := header.IPv6(make([]byte, header.IPv6MinimumSize+64))
	ip.Encode(&header.IPv6Fields{PayloadLength: 0xffff, TransportProtocol: 0, HopLimit: 64,
		SrcAddr: tcpip.AddrFrom16([16]byte{0xfd, 15: 0x64}), DstAddr: tcpip.AddrFrom16([16]byte{0xfd, 15: 2})})
	for k := header.IPv6MinimumSize; k < len(ip); k += 8 {
		ip[k], ip[k+1] = 60, 0xff // destination options, claiming 2 KiB each
	}
	return ethFrame(header.IPv6ProtocolNumber, ip)
}

// stackOnSocketPair starts a stack of cfg whose TAP is one end of a SOCK_SEQPACKET
// pair, closed at cleanup, and returns the other end: the guest's side of the link,
// as the container's kernel would have it.
func stackOnSocketPair(t *testing.T, cfg Config) (guestFD int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	link, err := newFrameEndpoint(fds[0], true, DefaultMTU, gatewayMAC)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = cfg.WithDefaults(); err != nil {
		t.Fatal(err)
	}
	s, err := startOn(cfg, link)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return fds[1]
}
