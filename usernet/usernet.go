// Package usernet is ctnet's rootless data plane: a user-mode TCP/IP stack
// (gVisor's netstack) on the host side of a container's TAP device.
//
// The container sees slirp4netns' conventions: its address 10.0.2.100/24, a
// gateway 10.0.2.2 and a DNS server 10.0.2.3, and on the IPv6 side (as
// slirp4netns --enable-ipv6) fd00::100/64, fd00::2 and fd00::3. Every TCP connection and UDP
// flow it opens is terminated in the stack and relayed through an ordinary
// host socket owned by the (unprivileged) user, so the container reaches
// exactly what the user can reach. ICMP echo goes out through unprivileged
// ICMP sockets, DNS queries to 10.0.2.3 or fd00::3 go to the host's
// resolvers, and the gateway addresses stand for the host's loopback (127.0.0.1,
// ::1) only when asked to.
//
// Published ports do not cross the stack: see Stack.Publish.
package usernet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/ctnet/ctnet/internal/nameconf"
	"github.com/ctnet/ctnet/usernet/addrs"
)

// Defaults follow slirp4netns so that tools and habits carry over.
const (
	DefaultMTU = 65520
	nicID      = 1
)

var (
	// DefaultSubnet is the container-side network.
	DefaultSubnet = netip.MustParsePrefix("10.0.2.0/24")
	// gatewayMAC is slirp4netns' gateway MAC; any locally administered
	// unicast address would do.
	gatewayMAC = tcpip.LinkAddress("\x52\x55\x0a\x00\x02\x02")
)

var (
	// ErrClosed is returned by operations on a closed Stack.
	ErrClosed = errors.New("usernet stack closed")
	// ErrInvalidConfig wraps every configuration error of Start and Publish.
	ErrInvalidConfig = errors.New("invalid usernet configuration")
)

// Config describes the container side of the user-mode network.
type Config struct {
	// TAP is the container's TAP device (IFF_TAP|IFF_NO_PI, ideally also
	// IFF_VNET_HDR). Start takes ownership: it is closed by Close, and by
	// Start itself on error.
	TAP *os.File
	// MTU of the TAP device; default DefaultMTU.
	MTU uint32
	// Subnet of the container side; default DefaultSubnet. Gateway (.2),
	// DNS (.3) and Guest (.100) are derived from it unless set.
	Subnet              netip.Prefix
	Gateway, DNS, Guest netip.Addr
	// AllowHostLoopback makes the gateway addresses stand for the host's
	// loopback (10.0.2.2 for 127.0.0.1, fd00::2 for ::1); otherwise TCP to
	// them is reset and UDP gets port unreachable.
	AllowHostLoopback bool
	// Resolvers receive the DNS queries sent to DNS, tried in order;
	// default: the nameservers of /etc/resolv.conf, port 53.
	Resolvers []netip.AddrPort
	// Logger receives the stack's diagnostics; default: discard.
	Logger *slog.Logger
}

// Stack is a running user-mode network for one container.
type Stack struct {
	cfg Config
	// v6 is the IPv6 side, the same for every stack (addrs.IPv6).
	v6   addrs.Addrs
	log  *slog.Logger
	ns   *stack.Stack
	link *tapEndpoint
	// ctx is cancelled by Close to abort dials and resolver queries.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	closers map[io.Closer]struct{}
	// tcpPending holds the SYNs whose forwarder goroutine gVisor has
	// spawned but that have not finished; see handleTCP.
	tcpPending map[stack.TransportEndpointID]struct{}
	wg         sync.WaitGroup

	tcpForwarder *tcp.Forwarder
	udpForwarder *udp.Forwarder
	icmp         icmpForwarder
	dnsSlots     chan struct{}
}

// WithDefaults returns cfg with every unset field derived (what Start will
// use; the sandbox needs the addresses before the TAP exists), or an error
// wrapping ErrInvalidConfig.
func (cfg Config) WithDefaults() (Config, error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 576 || cfg.MTU > DefaultMTU {
		return cfg, fmt.Errorf("%w: mtu %d outside 576..%d", ErrInvalidConfig, cfg.MTU, DefaultMTU)
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	layout, err := addrs.Of(cfg.Subnet)
	if err != nil {
		return cfg, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	cfg.Subnet = layout.Subnet
	if !cfg.Gateway.IsValid() {
		cfg.Gateway = layout.Gateway
	}
	if !cfg.DNS.IsValid() {
		cfg.DNS = layout.DNS
	}
	if !cfg.Guest.IsValid() {
		cfg.Guest = layout.Guest
	}
	for name, a := range map[string]netip.Addr{"gateway": cfg.Gateway, "dns": cfg.DNS, "guest": cfg.Guest} {
		if !cfg.Subnet.Contains(a) {
			return cfg, fmt.Errorf("%w: %s %s not in subnet %s", ErrInvalidConfig, name, a, cfg.Subnet)
		}
	}
	if cfg.Gateway == cfg.Guest || cfg.DNS == cfg.Guest {
		return cfg, fmt.Errorf("%w: guest %s collides with gateway or dns", ErrInvalidConfig, cfg.Guest)
	}
	if cfg.Resolvers == nil {
		// The forwarder runs on the host, so the host's loopback resolvers serve too.
		host, err := nameconf.ReadResolvConf(nameconf.HostResolvConf)
		if err != nil {
			return cfg, err
		}
		for _, s := range host.Nameservers {
			cfg.Resolvers = append(cfg.Resolvers, netip.AddrPortFrom(s, 53))
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// Start runs the stack on cfg.TAP until Close.
func Start(cfg Config) (*Stack, error) {
	if cfg.TAP == nil {
		return nil, fmt.Errorf("%w: no tap device", ErrInvalidConfig)
	}
	cfg, err := cfg.WithDefaults()
	if err != nil {
		cfg.TAP.Close()
		return nil, err
	}
	link, err := newTAPEndpoint(cfg.TAP, cfg.MTU, gatewayMAC)
	if err != nil {
		return nil, err
	}
	cfg.TAP = nil
	return startOn(cfg, link)
}

// startOn runs the stack on link; cfg has its defaults.
func startOn(cfg Config, link *tapEndpoint) (*Stack, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Stack{
		cfg:        cfg,
		v6:         addrs.IPv6(),
		log:        cfg.Logger,
		link:       link,
		ctx:        ctx,
		cancel:     cancel,
		closers:    make(map[io.Closer]struct{}),
		tcpPending: make(map[stack.TransportEndpointID]struct{}),
		dnsSlots:   make(chan struct{}, maxConcurrentDNSQueries),
	}
	s.icmp.init(s)
	if err := s.buildNetstack(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Stack) buildNetstack() error {
	s.ns = stack.New(stack.Options{
		// IPv6's zero options: no duplicate address detection, router
		// solicitations or autoconfiguration, only neighbour discovery.
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol, ipv6.NewProtocolWithOptions(ipv6.Options{})},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	// Throughput over a zero-latency, loss-free path is bounded by the
	// windows: let them grow (moderate receive buffer = auto-tuning) to
	// several MiB; SACK makes the rare loss (a full TAP queue) cheap.
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	cubic := tcpip.CongestionControlOption("cubic")
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &moderate, &cubic, &rcv, &snd} {
		if err := s.ns.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("set tcp option %T: %s", opt, err)
		}
	}
	// Handlers first: creating the NIC starts the TAP reader.
	// The TCP forwarder's own in-flight limit is disabled: handleTCP keeps the
	// authoritative count, see there.
	s.tcpForwarder = tcp.NewForwarder(s.ns, 0, 1<<30, s.forwardTCP)
	s.ns.SetTransportProtocolHandler(tcp.ProtocolNumber, s.handleTCP)
	s.udpForwarder = udp.NewForwarder(s.ns, s.forwardUDP)
	s.ns.SetTransportProtocolHandler(udp.ProtocolNumber, s.udpForwarder.HandlePacket)
	s.ns.SetTransportProtocolHandler(icmp.ProtocolNumber4, s.icmp.handleEcho)
	s.ns.SetTransportProtocolHandler(icmp.ProtocolNumber6, s.icmp.handleEcho6)
	if err := s.ns.CreateNIC(nicID, s.link); err != nil {
		return fmt.Errorf("create nic: %s", err)
	}
	// Promiscuous: accept packets for every destination (the whole
	// internet is "behind" this NIC); spoofing: answer from them.
	if err := s.ns.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("set promiscuous mode: %s", err)
	}
	if err := s.ns.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("set spoofing: %s", err)
	}
	for _, a := range []netip.Prefix{
		netip.PrefixFrom(s.cfg.Gateway, s.cfg.Subnet.Bits()), netip.PrefixFrom(s.cfg.DNS, s.cfg.Subnet.Bits()),
		netip.PrefixFrom(s.v6.Gateway, s.v6.Subnet.Bits()), netip.PrefixFrom(s.v6.DNS, s.v6.Subnet.Bits()),
	} {
		pa := tcpip.ProtocolAddress{
			Protocol:          ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(a.Addr().AsSlice()), PrefixLen: a.Bits()},
		}
		if a.Addr().Is6() {
			pa.Protocol = ipv6.ProtocolNumber
		}
		if err := s.ns.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("add address %s: %s", a, err)
		}
	}
	s.ns.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})

	return nil
}

// Close stops the stack: it closes every listener, connection and flow,
// stops the TAP reader and every goroutine the stack started, and closes
// the TAP. It is idempotent.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	closers := make([]io.Closer, 0, len(s.closers))
	for c := range s.closers {
		closers = append(closers, c)
	}
	s.closers = nil
	s.mu.Unlock()

	s.cancel()
	var errs []error
	for _, c := range closers {
		c.Close()
	}
	// Close aborts every endpoint; Wait removes the NIC, which stops the
	// TAP reader, and waits for gVisor's own goroutines.
	s.ns.Close()
	s.ns.Wait()
	s.wg.Wait()
	s.icmp.close()
	if err := s.link.close(); err != nil {
		errs = append(errs, fmt.Errorf("close tap: %w", err))
	}
	return errors.Join(errs...)
}

// track registers c to be closed by Close. It reports false, having closed
// c, when the stack is already closed. untrack must be called once c is
// closed by its owner.
func (s *Stack) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.closers[c] = struct{}{}
	return true
}

// trackPair tracks both ends of a relay, or closes both if the stack is closing; the
// returned func untracks them.
func (s *Stack) trackPair(a, b io.Closer) (untrack func(), ok bool) {
	if !s.track(a) {
		b.Close()
		return nil, false
	}
	if !s.track(b) {
		s.untrack(a)
		a.Close()
		return nil, false
	}
	return func() { s.untrack(a); s.untrack(b) }, true
}

func (s *Stack) untrack(c io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closers != nil {
		delete(s.closers, c)
	}
}

// spawn runs fn in a goroutine that Close waits for; it reports false and
// does nothing when the stack is closed.
func (s *Stack) spawn(fn func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

func toAddr(a tcpip.Address) netip.Addr {
	if a.Len() == 4 {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16())
}
