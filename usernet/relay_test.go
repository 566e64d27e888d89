package usernet

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// A TCP connection from the container to the gateway reaches the host's
// loopback through the relay, and carries megabytes both ways, each
// direction ended on its own (half close), byte for byte. The container is a
// second gVisor stack on the other end of the frame socket.
func TestRelayCarriesBothDirections(t *testing.T) {
	guest := guestStack(t, stackOnSocketPair(t, Config{AllowHostLoopback: true, Resolvers: []netip.AddrPort{}}))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	up, down := make([]byte, 9<<20+17), make([]byte, 11<<20+3)
	for _, b := range [][]byte{up, down} {
		for k := range b {
			b[k] = byte(rng.Uint32())
		}
	}
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		if err == nil && !bytes.Equal(got, up) {
			err = io.ErrUnexpectedEOF
			t.Errorf("the host got %d bytes, not the %d the container sent", len(got), len(up))
		}
		if err == nil {
			_, err = c.Write(down)
		}
		served <- err
	}()

	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	c, err := gonet.DialContextTCP(context.Background(), guest, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4([4]byte{10, 0, 2, 2}), Port: port}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(up); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, down) {
		t.Errorf("the container got %d bytes, not the %d the host sent", len(got), len(down))
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// guestStack is a container's stack at 10.0.2.100 on fd, routed through the
// gateway.
func guestStack(t *testing.T, fd int) *stack.Stack {
	t.Helper()
	link, err := newFrameEndpoint(fd, true, DefaultMTU, guestMAC)
	if err != nil {
		t.Fatal(err)
	}
	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	t.Cleanup(func() {
		st.Close()
		st.Wait()
		link.close()
	})
	if err := st.CreateNIC(1, link); err != nil {
		t.Fatal(err)
	}
	addr := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4([4]byte{10, 0, 2, 100}), PrefixLen: 24}}
	if err := st.AddProtocolAddress(1, addr, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	st.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4([4]byte{10, 0, 2, 2}), NIC: 1}})
	return st
}
