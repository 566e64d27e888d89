package network

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/store"
)

// PortSpec is one -p argument: [HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/PROTO], as Docker
// writes it, an IPv6 HOSTIP in brackets. A zero HostPort means "choose a free port"; a host range with a single
// container port means "the first free port of the range".
type PortSpec struct {
	HostIP                netip.Addr // invalid: every address
	HostPort, HostPortEnd uint16
	ContainerPort, CPEnd  uint16
	Proto                 string
}

func (p PortSpec) String() string {
	var b strings.Builder
	switch {
	case p.HostIP.Is6():
		b.WriteString("[" + p.HostIP.String() + "]:")
	case p.HostIP.IsValid():
		b.WriteString(p.HostIP.String() + ":")
	}
	if p.HostPort != 0 {
		b.WriteString(portRange(p.HostPort, p.HostPortEnd) + ":")
	} else if p.HostIP.IsValid() {
		b.WriteString(":")
	}
	b.WriteString(portRange(p.ContainerPort, p.CPEnd) + "/" + p.Proto)
	return b.String()
}

func portRange(a, b uint16) string {
	if b == a {
		return strconv.Itoa(int(a))
	}
	return fmt.Sprintf("%d-%d", a, b)
}

// loopback6Refusal says why [::1] cannot be published.
const loopback6Refusal = "[::1] cannot be published: IPv6 has no route_localnet, and the kernel does not route ::1 off lo; publish on [::] or one of the host's addresses and reach it there"

// ParsePort parses one -p argument.
func ParsePort(s string) (PortSpec, error) {
	bad := func(why string) (PortSpec, error) {
		return PortSpec{}, badField("Ports", s, "%s (use [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp|/sctp], e.g. 8080:80)", why)
	}
	spec := PortSpec{Proto: "tcp"}
	rest := s
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		spec.Proto = strings.ToLower(rest[i+1:])
		rest = rest[:i]
		if spec.Proto != "tcp" && spec.Proto != "udp" && spec.Proto != "sctp" {
			return bad("protocol must be tcp, udp or sctp")
		}
	}
	var hostIP, hostPorts, cPorts string
	var err error
	if bracketed, ok := strings.CutPrefix(rest, "["); ok {
		// An IPv6 address needs its brackets: "[::1]:8080:80", "[::1]::80".
		v6, ports, ok := strings.Cut(bracketed, "]:")
		if !ok || strings.Count(ports, ":") != 1 {
			return bad("an IPv6 host address is written [ADDRESS]:HOSTPORT:CONTAINERPORT")
		}
		if spec.HostIP, err = netip.ParseAddr(v6); err != nil || !spec.HostIP.Is6() || spec.HostIP.Is4In6() || spec.HostIP.Zone() != "" {
			return bad("[" + printable(v6) + "] is not an IPv6 address")
		}
		hostPorts, cPorts, _ = strings.Cut(ports, ":")
	} else {
		parts := strings.Split(rest, ":")
		switch len(parts) {
		case 1:
			cPorts = parts[0]
		case 2:
			hostPorts, cPorts = parts[0], parts[1]
		case 3:
			// An empty address means every address, as in Docker's "::80".
			hostIP, hostPorts, cPorts = parts[0], parts[1], parts[2]
		default:
			return bad("too many ':'")
		}
	}
	if hostIP != "" {
		if spec.HostIP, err = netip.ParseAddr(hostIP); err != nil || !spec.HostIP.Is4() {
			return bad("host address must be an IPv4 address, or an IPv6 address in brackets")
		}
	}
	if spec.ContainerPort, spec.CPEnd, err = parseRange(cPorts); err != nil {
		return bad("container port: " + err.Error())
	}
	if hostPorts != "" {
		if spec.HostPort, spec.HostPortEnd, err = parseRange(hostPorts); err != nil {
			return bad("host port: " + err.Error())
		}
		hostLen, cLen := spec.HostPortEnd-spec.HostPort, spec.CPEnd-spec.ContainerPort
		if cLen != 0 && hostLen != cLen {
			return bad("the host and container ranges differ in length")
		}
	}
	// An empty host port (":80", "127.0.0.1::80") means "choose one", as in Docker.
	return spec, nil
}

func parseRange(s string) (uint16, uint16, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := parsePortNumber(lo)
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return a, a, nil
	}
	b, err := parsePortNumber(hi)
	if err != nil {
		return 0, 0, err
	}
	if b < a {
		return 0, 0, fmt.Errorf("range %s ends before it starts", s)
	}
	return a, b, nil
}

func parsePortNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number from 1 to 65535", printable(s))
	}
	return uint16(n), nil
}

// allocatePorts turns specs into single-port mappings to the container's addresses
// (containerIP, containerIP6: either may be invalid), choosing host ports where
// asked, and refuses any that clash with a live container's port or a host socket.
// A spec without a host address is published on every address of each family the
// container has (0.0.0.0 and [::], one host port for both); one with an address, on
// that address to the container's address of its family. Clashes with containers
// whose process has died release those first.
func (m *Manager) allocatePorts(o *op, specs []PortSpec, containerIP, containerIP6 netip.Addr, containerID string) ([]store.Port, error) {
	var out []store.Port
	taken := map[string]bool{}
	for _, spec := range specs {
		target := containerIP
		switch {
		case spec.HostIP.Is6() && m.rootless:
			// The user-mode stack listens on the IPv6 host address itself and takes
			// its clients to the container's one record address.
		case spec.HostIP.Is6():
			if target = containerIP6; !target.IsValid() {
				return nil, badField("Ports", spec.String(), "the container has no IPv6 address: publish on an IPv4 host address, or use a network with --ipv6")
			}
		case spec.HostIP.IsValid() && !containerIP.IsValid():
			return nil, badField("Ports", spec.String(), "the container has no IPv4 address: publish on an IPv6 host address in brackets")
		case !spec.HostIP.IsValid() && !containerIP.IsValid():
			spec.HostIP, target = netip.IPv6Unspecified(), containerIP6
		}
		ports, err := m.allocateSpec(o, spec, target, taken)
		if err != nil {
			return nil, err
		}
		out = append(out, ports...)
		if spec.HostIP.IsValid() || !containerIP6.IsValid() {
			continue
		}
		for _, p := range ports {
			twin := p
			twin.HostIP, twin.ContainerIP = netip.IPv6Unspecified(), containerIP6
			if err := m.checkPortFree(o, twin); err != nil {
				return nil, err
			}
			taken[portTakenKey(twin)] = true
			out = append(out, twin)
		}
	}
	for _, p := range out {
		if err := o.tx.PutPort(p, containerID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func portTakenKey(p store.Port) string { return fmt.Sprintf("%s/%s/%d", p.Proto, p.HostIP, p.HostPort) }

// allocateSpec turns one spec into single-port mappings to containerIP.
func (m *Manager) allocateSpec(o *op, spec PortSpec, containerIP netip.Addr, taken map[string]bool) ([]store.Port, error) {
	var out []store.Port
	count := int(spec.CPEnd-spec.ContainerPort) + 1
	switch {
	case spec.HostPort == 0:
		for i := range count {
			port, err := m.freeHostPort(o, spec.Proto, spec.HostIP, taken)
			if err != nil {
				return nil, err
			}
			p := store.Port{HostIP: spec.HostIP, HostPort: port, ContainerPort: spec.ContainerPort + uint16(i), Proto: spec.Proto, ContainerIP: containerIP}
			taken[portTakenKey(p)] = true
			out = append(out, p)
		}
	case count == 1 && spec.HostPortEnd > spec.HostPort:
		var lastErr error
		for hp := int(spec.HostPort); hp <= int(spec.HostPortEnd); hp++ {
			p := store.Port{HostIP: spec.HostIP, HostPort: uint16(hp), ContainerPort: spec.ContainerPort, Proto: spec.Proto, ContainerIP: containerIP}
			if taken[portTakenKey(p)] {
				continue
			}
			if lastErr = m.checkPortFree(o, p); lastErr == nil {
				taken[portTakenKey(p)] = true
				return append(out, p), nil
			}
		}
		return nil, tagged(ErrPortInUse, "no free port in %s: last tried: %v", portRange(spec.HostPort, spec.HostPortEnd), lastErr)
	default:
		for i := range count {
			p := store.Port{HostIP: spec.HostIP, HostPort: spec.HostPort + uint16(i), ContainerPort: spec.ContainerPort + uint16(i), Proto: spec.Proto, ContainerIP: containerIP}
			if taken[portTakenKey(p)] {
				return nil, invalid("port %s/%d is published twice", p.Proto, p.HostPort)
			}
			if err := m.checkPortFree(o, p); err != nil {
				return nil, err
			}
			taken[portTakenKey(p)] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// checkPortFree refuses a host port that a live container publishes on an
// overlapping address, or that a host process has bound.
func (m *Manager) checkPortFree(o *op, p store.Port) error {
	anyAddr := !p.HostIP.IsValid() || p.HostIP.IsUnspecified()
	for ip, holder := range o.tx.PortHolders(p.Proto, p.HostPort) {
		if !anyAddr && ip.IsValid() && !ip.IsUnspecified() && ip != p.HostIP {
			continue
		}
		c, err := o.tx.Container(holder)
		if err == nil && c.State != store.StateExited && !isAlive(c) {
			if err := m.release(o, c, -1); err != nil {
				return err
			}
			continue
		}
		name := holder
		if err == nil {
			name = c.Name
		}
		return tagged(ErrPortInUse, "host port %s/%d is already published by container %s", p.Proto, p.HostPort, name)
	}
	return m.checkHostSocket(p.Proto, p.HostIP, p.HostPort)
}

// refuseLoopback6 refuses ports a ctnet network would publish on [::1]: IPv6 has no
// route_localnet, and the kernel does not route ::1 off lo, so a DNAT to a container
// could never be answered. The user-mode network listens there itself.
func refuseLoopback6(specs []PortSpec) error {
	for _, p := range specs {
		if p.HostIP.Is6() && p.HostIP.IsLoopback() {
			return badField("Ports", p.String(), loopback6Refusal)
		}
	}
	return nil
}

// checkHostSocket tries to bind the port in the host namespace: a failure means a
// host process holds it (unless the caller reserves its ports itself), or the address
// is not the host's. An unprivileged user's port on every address is served on [::]
// too, where the kernel has IPv6.
func (m *Manager) checkHostSocket(proto string, ip netip.Addr, port uint16) error {
	addr := ip
	if !addr.IsValid() {
		addr = netip.IPv4Unspecified()
	}
	bindErr, err := m.tryBind(proto, addr, port)
	if err == nil && bindErr == nil && !ip.IsValid() && m.rootless {
		bindErr, err = m.tryBind(proto, netip.IPv6Unspecified(), port)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			bindErr, err = nil, nil // a kernel without IPv6 (ipv6.disable=1)
		}
	}
	if err != nil {
		return fmt.Errorf("check host port %s/%d: %w", proto, port, err)
	}
	switch {
	case bindErr == nil:
		return nil
	case errors.Is(bindErr, unix.EADDRINUSE) && m.callerReserves:
		return nil
	case errors.Is(bindErr, unix.EADDRINUSE):
		who := m.portHolder(proto, port)
		return tagged(ErrPortInUse, "host port %s/%d is already in use on the host%s", proto, port, who)
	case errors.Is(bindErr, unix.EADDRNOTAVAIL):
		return invalid("host address %s is not an address of this host", ip)
	case errors.Is(bindErr, unix.EACCES):
		return invalid("host port %d is privileged: unprivileged users can publish ports from net.ipv4.ip_unprivileged_port_start (usually 1024) up", port)
	}
	return fmt.Errorf("check host port %s/%d: %w", proto, port, bindErr)
}

// tryBind binds a socket of proto to addr:port in the host namespace and
// returns bind's error apart from the others.
func (m *Manager) tryBind(proto string, addr netip.Addr, port uint16) (bindErr, err error) {
	typ, sproto := sockType(proto)
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	err = m.host.Do(func() error {
		fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, sproto)
		if err != nil {
			if proto == "sctp" {
				return nil // no SCTP in this kernel: nothing can hold the port
			}
			return err
		}
		defer unix.Close(fd)
		if typ == unix.SOCK_STREAM {
			// Only listeners conflict with a published port, not connections that
			// happen to use it as their local port (or linger in TIME_WAIT).
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				return err
			}
		}
		if family == unix.AF_INET6 {
			// As the user-mode stack's listener, which leaves IPv4 to its own.
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
				return err
			}
		}
		bindErr = unix.Bind(fd, sockaddr(netip.AddrPortFrom(addr, port)))
		return nil
	})
	return bindErr, err
}

// sockaddr is a's socket address.
func sockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is6() {
		return &unix.SockaddrInet6{Addr: a.Addr().As16(), Port: int(a.Port())}
	}
	return &unix.SockaddrInet4{Addr: a.Addr().As4(), Port: int(a.Port())}
}

func sockType(proto string) (int, int) {
	switch proto {
	case "udp":
		return unix.SOCK_DGRAM, unix.IPPROTO_UDP
	case "sctp":
		return unix.SOCK_STREAM, unix.IPPROTO_SCTP
	}
	return unix.SOCK_STREAM, unix.IPPROTO_TCP
}

// freeHostPort asks the kernel for a free port (bind to port 0) that no container
// publishes either.
func (m *Manager) freeHostPort(o *op, proto string, ip netip.Addr, taken map[string]bool) (uint16, error) {
	typ, sproto := sockType(proto)
	addr := ip
	if !addr.IsValid() {
		addr = netip.IPv4Unspecified()
	}
	for range 64 {
		var port uint16
		err := m.host.Do(func() error {
			family := unix.AF_INET
			if addr.Is6() {
				family = unix.AF_INET6
			}
			fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, sproto)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(addr, 0))); err != nil {
				return err
			}
			sa, err := unix.Getsockname(fd)
			if err != nil {
				return err
			}
			switch sa := sa.(type) {
			case *unix.SockaddrInet4:
				port = uint16(sa.Port)
			case *unix.SockaddrInet6:
				port = uint16(sa.Port)
			}
			return nil
		})
		if err != nil {
			if errors.Is(err, unix.EADDRNOTAVAIL) {
				return 0, invalid("host address %s is not an address of this host", ip)
			}
			return 0, fmt.Errorf("choose a host port: %w", err)
		}
		p := store.Port{HostIP: ip, HostPort: port, Proto: proto}
		if taken[portTakenKey(p)] {
			continue
		}
		if len(o.tx.PortHolders(proto, port)) == 0 {
			return port, nil
		}
	}
	return 0, tagged(ErrPortInUse, "no free host port found")
}

// portHolder names the host process holding a port, as " by NAME (pid N)", or "".
func (m *Manager) portHolder(proto string, port uint16) string {
	var inode string
	m.host.Do(func() error {
		inode = socketInode(proto, port)
		return nil
	})
	if inode == "" {
		return ""
	}
	target := "socket:[" + inode + "]"
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		if l, err := os.Readlink(fd); err == nil && l == target {
			pid := strings.Split(fd, "/")[2]
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			return fmt.Sprintf(" by %s (pid %s)", strings.TrimSpace(string(comm)), pid)
		}
	}
	return ""
}

// socketInode finds the inode of a socket bound to port in the calling thread's
// namespace (listening for TCP), from /proc/thread-self/net.
func socketInode(proto string, port uint16) string {
	files := map[string][]string{"tcp": {"tcp", "tcp6"}, "udp": {"udp", "udp6"}, "sctp": {}}[proto]
	want := fmt.Sprintf(":%04X", port)
	for _, name := range files {
		f, err := os.Open("/proc/thread-self/net/" + name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !strings.HasSuffix(fields[1], want) {
				continue
			}
			if proto == "tcp" && fields[3] != "0A" { // LISTEN
				continue
			}
			f.Close()
			return fields[9]
		}
		f.Close()
	}
	return ""
}
