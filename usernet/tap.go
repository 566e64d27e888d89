package usernet

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tapEndpoint is a gVisor link endpoint on a TAP file descriptor.
//
// gVisor's own fdbased endpoint is not used because it leaks one eventfd per
// dispatcher (its stop fd is never closed) and it only speaks virtio-net
// headers on sockets, not on TAP devices. This endpoint reads with Go's
// poller (so Close can interrupt a blocked read) and, when the TAP was made
// with IFF_VNET_HDR, exchanges virtio-net headers so that neither kernel nor
// gVisor computes TCP/UDP checksums for packets that never leave this host:
// the kernel hands us CHECKSUM_PARTIAL packets (TUN_F_CSUM) and gVisor hands
// the kernel partially checksummed TCP segments (host GSO), exactly like a
// virtio NIC and its hypervisor.
type tapEndpoint struct {
	file    *os.File
	raw     syscall.RawConn
	vnetHdr bool
	mtu     uint32
	addr    tcpip.LinkAddress

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
	readDone   chan struct{}
}

var (
	_                    stack.LinkEndpoint = (*tapEndpoint)(nil)
	_                    stack.GSOEndpoint  = (*tapEndpoint)(nil)
	errTAPWithPacketInfo                    = errors.New("tap device has packet information enabled (IFF_NO_PI not set)")
)

// virtio-net header (linux/virtio_net.h), as prepended by a TAP device made
// with IFF_VNET_HDR; default size without mergeable buffers.
const (
	vnetHdrSize       = 10
	vnetHdrFNeedsCsum = 1
	vnetHdrGSOTCPv4   = 1
	vnetHdrGSOTCPv6   = 4
	tapGSOMaxSize     = 1<<16 - 1
	smallFrameCopyMax = 2048
	// frameHeadSize is one of gVisor's chunk sizes, so that a head view
	// is full (see readLoop).
	frameHeadSize = 256
)

// newTAPEndpoint takes ownership of tap (it is closed by close) and inspects
// its flags to know whether frames carry virtio-net headers.
func newTAPEndpoint(tap *os.File, mtu uint32, addr tcpip.LinkAddress) (*tapEndpoint, error) {
	raw, err := tap.SyscallConn()
	if err != nil {
		tap.Close()
		return nil, fmt.Errorf("inspect tap: %w", err)
	}
	var dupFD int
	var flags uint16
	var opErr error
	if err := raw.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			opErr = err
			return
		}
		if err := unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); err != nil {
			opErr = fmt.Errorf("ioctl TUNGETIFF: %w", err)
			return
		}
		flags = ifr.Uint16()
		if flags&unix.IFF_VNET_HDR != 0 {
			// We may receive packets whose checksum the sender left to
			// "hardware": gVisor is told to trust them (RX checksum
			// offload), which is sound because they come from the
			// namespace's own kernel. TSO: the kernel hands us TCP
			// super-frames of up to 64 KiB whatever the MTU, which
			// gVisor takes as one large segment (readLoop ignores the
			// header's segmentation fields: it has nothing to split).
			if err := unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6); err != nil {
				opErr = fmt.Errorf("ioctl TUNSETOFFLOAD: %w", err)
				return
			}
		}
		dupFD, opErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		opErr = err
	}
	tap.Close()
	if opErr != nil {
		return nil, fmt.Errorf("inspect tap: %w", opErr)
	}
	if flags&unix.IFF_TAP == 0 || flags&unix.IFF_NO_PI == 0 {
		unix.Close(dupFD)
		if flags&unix.IFF_NO_PI == 0 {
			return nil, fmt.Errorf("inspect tap: %w", errTAPWithPacketInfo)
		}
		return nil, errors.New("inspect tap: not a TAP (ethernet) device")
	}
	return newFrameEndpoint(dupFD, flags&unix.IFF_VNET_HDR != 0, mtu, addr)
}

// newFrameEndpoint makes the endpoint on fd, a descriptor of whole Ethernet
// frames (a TAP's, or a test's SOCK_SEQPACKET socket), each after a
// virtio-net header if vnetHdr; it takes ownership of fd.
func newFrameEndpoint(fd int, vnetHdr bool, mtu uint32, addr tcpip.LinkAddress) (*tapEndpoint, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set tap non-blocking: %w", err)
	}
	// A non-blocking descriptor makes os.NewFile register it with the
	// runtime poller, so reads park the goroutine, not a thread.
	file := os.NewFile(uintptr(fd), "tap")
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("inspect tap: %w", err)
	}
	return &tapEndpoint{file: file, raw: raw, vnetHdr: vnetHdr, mtu: mtu, addr: addr}, nil
}

// MTU implements stack.LinkEndpoint.
func (e *tapEndpoint) MTU() uint32 { return e.mtu }

// SetMTU implements stack.LinkEndpoint; the MTU is fixed by Config.
func (e *tapEndpoint) SetMTU(uint32) {}

// MaxHeaderLength implements stack.LinkEndpoint.
func (e *tapEndpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress implements stack.LinkEndpoint.
func (e *tapEndpoint) LinkAddress() tcpip.LinkAddress { return e.addr }

// SetLinkAddress implements stack.LinkEndpoint; the address is fixed.
func (e *tapEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint.
func (e *tapEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	// Frames come from the namespace's kernel, which either computed the
	// checksum or (with a vnet header) left it to us: never corrupt.
	return stack.CapabilityResolutionRequired | stack.CapabilityRXChecksumOffload
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *tapEndpoint) GSOMaxSize() uint32 {
	if e.vnetHdr {
		return tapGSOMaxSize
	}
	return 0
}

// SupportedGSO implements stack.GSOEndpoint.
func (e *tapEndpoint) SupportedGSO() stack.SupportedGSO {
	if e.vnetHdr {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// ARPHardwareType implements stack.LinkEndpoint.
func (e *tapEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint.
func (e *tapEndpoint) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: pkt.EgressRoute.LocalLinkAddress,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (e *tapEndpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if !ok {
		return false
	}
	pkt.NetworkProtocolNumber = header.Ethernet(hdr).Type()
	return true
}

// Close implements stack.LinkEndpoint; the descriptor is released by close.
func (e *tapEndpoint) Close() {}

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *tapEndpoint) SetOnCloseAction(func()) {}

// Attach implements stack.LinkEndpoint: a non-nil dispatcher starts the read
// loop, nil stops it and waits for it.
func (e *tapEndpoint) Attach(dispatcher stack.NetworkDispatcher) {
	e.mu.Lock()
	if dispatcher == nil {
		done := e.readDone
		e.dispatcher = nil
		e.readDone = nil
		e.mu.Unlock()
		if done != nil {
			// An expired deadline wakes the parked read with an error.
			e.file.SetReadDeadline(time.Unix(1, 0))
			<-done
		}
		return
	}
	defer e.mu.Unlock()
	if e.dispatcher != nil {
		return
	}
	e.dispatcher = dispatcher
	e.readDone = make(chan struct{})
	go e.readLoop(dispatcher, e.readDone)
}

// IsAttached implements stack.LinkEndpoint.
func (e *tapEndpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint.
func (e *tapEndpoint) Wait() {
	e.mu.RLock()
	done := e.readDone
	e.mu.RUnlock()
	if done != nil {
		<-done
	}
}

func (e *tapEndpoint) close() error { return e.file.Close() }

// readLoop reads one frame per read(2) (a TAP has no recvmmsg) into two
// pooled views, the first frameHeadSize bytes and the rest, so a large frame
// reaches gVisor without a copy; small frames are copied into a right-sized
// view so that a queue of tiny segments does not pin 64 KiB chunks.
//
// The head holds every header of a TCP segment (Ethernet, IP and TCP with
// options: at most 134 bytes over IPv4) in a chunk of its own: gVisor's IP
// layer keeps a reference to the network header's view while it reads the
// header again, and a header in a shared chunk is read through a private copy
// of the whole chunk, which for a single 64 KiB view was an allocation, a
// clear and a copy of 64 KiB per frame.
func (e *tapEndpoint) readLoop(dispatcher stack.NetworkDispatcher, done chan struct{}) {
	defer close(done)
	var vnet [vnetHdrSize]byte
	bodyCap := e.frameCap() - frameHeadSize
	iovecs := make([]unix.Iovec, 0, 3)
	var head, body *buffer.View
	defer func() {
		for _, v := range []*buffer.View{head, body} {
			if v != nil {
				v.Release()
			}
		}
	}()
	for {
		if head == nil {
			head = buffer.NewViewSize(frameHeadSize)
		}
		if body == nil {
			body = buffer.NewViewSize(bodyCap)
		}
		iovecs = iovecs[:0]
		if e.vnetHdr {
			iovecs = append(iovecs, rawfile.IovecFromBytes(vnet[:]))
		}
		iovecs = append(iovecs, rawfile.IovecFromBytes(head.AsSlice()), rawfile.IovecFromBytes(body.AsSlice()))
		var n int
		var errno syscall.Errno
		err := e.raw.Read(func(fd uintptr) bool {
			r, _, en := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&iovecs[0])), uintptr(len(iovecs)))
			n, errno = int(r), en
			return errno != unix.EAGAIN
		})
		if err != nil || errno == unix.EBADFD || errno == unix.EIO {
			return
		}
		if errno != 0 {
			continue
		}
		if e.vnetHdr {
			n -= vnetHdrSize
		}
		if n < header.EthernetMinimumSize {
			continue
		}
		var frame buffer.Buffer
		switch {
		case n <= frameHeadSize:
			frame = buffer.MakeWithData(head.AsSlice()[:n])
		case n <= smallFrameCopyMax:
			frame = buffer.MakeWithData(head.AsSlice())
			frame.Append(buffer.NewViewWithData(body.AsSlice()[:n-frameHeadSize]))
		default:
			// The head fills its chunk, so Append links the body after it
			// instead of copying into it.
			body.CapLength(n - frameHeadSize)
			frame = buffer.MakeWithView(head)
			frame.Append(body)
			head, body = nil, nil
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: frame})
		if hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize); ok {
			eth := header.Ethernet(hdr)
			dst := eth.DestinationAddress()
			// Unicast to us, or group-addressed (broadcast/multicast bit).
			if dst == e.addr || dst[0]&1 == 1 {
				dispatcher.DeliverNetworkPacket(eth.Type(), pkt)
			}
		}
		pkt.DecRef()
	}
}

// frameCap is the largest frame readLoop takes: one of the MTU, or a TCP
// super-frame of up to 64 KiB of IP packet when the kernel hands us TSO
// frames.
func (e *tapEndpoint) frameCap() int {
	frame := int(e.mtu)
	if e.vnetHdr {
		frame = max(frame, tapGSOMaxSize)
	}
	return frame + header.EthernetMinimumSize
}

// WritePackets implements stack.LinkWriter. A TAP write injects the frame
// into the namespace's stack synchronously, so it does not block; a failed
// write drops the packet like a full NIC queue would.
func (e *tapEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var iovecArr [16]unix.Iovec
	written := 0
	for _, pkt := range pkts.AsSlice() {
		iovecs := iovecArr[:0]
		var vnet [vnetHdrSize]byte
		if e.vnetHdr {
			encodeVnetHdr(vnet[:], pkt)
			iovecs = append(iovecs, rawfile.IovecFromBytes(vnet[:]))
		}
		for _, s := range pkt.AsSlices() {
			iovecs = rawfile.AppendIovecFromBytes(iovecs, s, rawfile.MaxIovs)
		}
		var errno unix.Errno
		if err := e.raw.Write(func(fd uintptr) bool {
			errno = rawfile.NonBlockingWriteIovec(int(fd), iovecs)
			return true
		}); err != nil {
			return written, &tcpip.ErrClosedForSend{}
		}
		if errno != 0 && errno != unix.EAGAIN && errno != unix.ENOBUFS {
			return written, tcpip.TranslateErrno(errno)
		}
		written++
	}
	return written, nil
}

// encodeVnetHdr fills a little-endian virtio_net_hdr for pkt: TCP segments
// from gVisor's host-GSO path carry only the pseudo-header checksum and ask
// the kernel to finish it (NEEDS_CSUM), which a local receiver skips, and
// segments above the MSS are marked for segmentation.
func encodeVnetHdr(b []byte, pkt *stack.PacketBuffer) {
	clear(b)
	gso := pkt.GSOOptions
	if gso.Type == stack.GSONone {
		return
	}
	hdrLen := uint16(pkt.HeaderSize())
	var flags, gsoType uint8
	var csumStart, csumOffset, gsoSize uint16
	if gso.NeedsCsum {
		flags = vnetHdrFNeedsCsum
		csumStart = header.EthernetMinimumSize + gso.L3HdrLen
		csumOffset = gso.CsumOffset
	}
	if uint16(pkt.Data().Size()) > gso.MSS {
		switch gso.Type {
		case stack.GSOTCPv4:
			gsoType, gsoSize = vnetHdrGSOTCPv4, gso.MSS
		case stack.GSOTCPv6:
			gsoType, gsoSize = vnetHdrGSOTCPv6, gso.MSS
		}
	}
	b[0] = flags
	b[1] = gsoType
	putLE16(b[2:], hdrLen)
	putLE16(b[4:], gsoSize)
	putLE16(b[6:], csumStart)
	putLE16(b[8:], csumOffset)
}

func putLE16(b []byte, v uint16) {
	b[0] = byte(v)
	b[1] = byte(v >> 8)
}
