package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RootlessChildArg is os.Args[1] of the re-executed rootless helper: a
// program that starts rootless containers must call RootlessChildMain first
// thing in main when it sees it.
const RootlessChildArg = "__ctnet-rootless-child"

// rootlessStage2Arg marks the second exec of the helper, once its user
// namespace has an id map (see RootlessChildMain).
const rootlessStage2Arg = "mapped"

// Descriptors the parent hands the helper (exec.Cmd.ExtraFiles).
const (
	childLifecycleFD = 3 // config, ready, start, started, exited
	childFactoryFD   = 4 // inner sockets for published ports
	childExecFD      = 5 // listening socket for ExecRootless
)

const (
	tapName = "tap0"
	// publishRouteTable holds "local 0.0.0.0/0 dev lo" (and ::/0): replies from a
	// published port are delivered to the transparent inner socket bound
	// to the client's address instead of being routed out of tap0.
	publishRouteTable = 0x6374 // "ct"
	publishRulePrio   = 100
)

// RootlessChildMain runs the in-namespace helper and never returns.
//
// The helper is cloned by StartRootless into new user, network and PID
// (and UTS) namespaces. It runs twice: first unmapped, without capabilities
// (execve dropped them, because uid 0 did not exist in the new namespace
// yet), waiting for the parent to write the id maps; then it executes
// itself again, now as root of its namespace with a full capability set.
// As PID 1 of its PID namespace it sets up lo and tap0, hands the TAP to the
// parent, runs CMD, serves inner sockets and exec requests, reaps orphans,
// and exits when CMD exits, which makes the kernel kill whatever is left.
func RootlessChildMain() {
	if len(os.Args) > 2 && os.Args[2] == rootlessStage2Arg {
		os.Exit(runRootlessHelper())
	}
	// Stage 1: a blocking read on the inherited descriptor (it must stay
	// open and inheritable across the exec, so no Go wrapper owns it).
	buf := make([]byte, 512)
	n, err := unix.Read(childLifecycleFD, buf)
	if err != nil || n == 0 {
		os.Exit(1)
	}
	err = unix.Exec("/proc/self/exe", []string{os.Args[0], RootlessChildArg, rootlessStage2Arg}, os.Environ())
	fmt.Fprintf(os.Stderr, "ctnet rootless helper: re-exec: %v\n", err)
	os.Exit(1)
}

func runRootlessHelper() int {
	lifecycle, err := unixConnFromFD(childLifecycleFD)
	if err != nil {
		return 1
	}
	fail := func(err error) int {
		kind := ""
		switch {
		case errors.Is(err, ErrTUNUnavailable):
			kind = errKindTUN
		case errors.Is(err, ErrUserNamespaceForbidden):
			kind = errKindUserNS
		}
		sendRootless(lifecycle, rootlessMessage{Op: opError, Err: err.Error(), ErrKind: kind})
		return 1
	}
	factory, err := unixConnFromFD(childFactoryFD)
	if err != nil {
		return fail(err)
	}
	execFile := os.NewFile(childExecFD, "exec")
	execLn, err := net.FileListener(execFile)
	execFile.Close()
	if err != nil {
		return fail(fmt.Errorf("adopt exec socket: %w", err))
	}

	m, _, err := recvRootless(lifecycle)
	if err != nil || m.Op != opConfig || m.Config == nil {
		return 1
	}
	cfg := *m.Config
	tap, err := setUpRootlessNamespaces(cfg)
	if err != nil {
		return fail(err)
	}
	if tap != nil {
		err = sendRootless(lifecycle, rootlessMessage{Op: opReady}, tap)
		tap.Close()
	} else {
		err = sendRootless(lifecycle, rootlessMessage{Op: opReady})
	}
	if err != nil {
		return 1
	}
	if m, _, err := recvRootless(lifecycle); err != nil || m.Op != opStart {
		return 1
	}

	// Handlers (not SIG_IGN, which CMD would inherit): termination
	// requests are passed to CMD; terminal signals reach CMD directly
	// through the shared process group.
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, unix.SIGCHLD, unix.SIGTERM, unix.SIGHUP, unix.SIGINT, unix.SIGQUIT)
	r := &childReaper{waiters: make(map[int]chan int)}
	stdio := []uintptr{0, 1, 2}
	pid, exited, err := r.start(cfg.Argv, cfg.Env, cfg.Dir, stdio)
	if err != nil {
		return fail(fmt.Errorf("start command: %w", err))
	}
	// The host's PID of CMD is read here, before the reaping below can
	// make it disappear: /proc is the host's, so /proc/self names this
	// helper by its host PID.
	self, err := os.Readlink("/proc/self")
	if err != nil {
		return fail(fmt.Errorf("find own host pid: %w", err))
	}
	selfPID, err := strconv.Atoi(self)
	if err != nil {
		return fail(fmt.Errorf("find own host pid: %w", err))
	}
	hostPID, err := hostPIDOf(selfPID, pid)
	if err != nil {
		return fail(err)
	}
	if err := sendRootless(lifecycle, rootlessMessage{Op: opStarted, PID: hostPID}); err != nil {
		return 1
	}
	go serveInnerSockets(factory)
	go serveExec(execLn, r, cfg)
	parentGone := make(chan struct{})
	go func() {
		// Nothing else arrives on this socket: EOF means the parent
		// died, and with it the user-mode stack.
		recvRootless(lifecycle)
		close(parentGone)
	}()
	for {
		select {
		case sig := <-signals:
			switch sig {
			case unix.SIGCHLD:
				r.reap()
			case unix.SIGTERM, unix.SIGHUP:
				unix.Kill(pid, sig.(syscall.Signal))
			}
		case code := <-exited:
			sendRootless(lifecycle, rootlessMessage{Op: opExited, Code: code})
			return 0
		case <-parentGone:
			return 1
		}
	}
}

// setUpRootlessNamespaces configures the namespaces the helper was cloned
// into and returns the TAP (nil with network "none").
func setUpRootlessNamespaces(cfg rootlessChildConfig) (*os.File, error) {
	// The helper was born in its own mount namespace when there are files: every
	// thread is in it, and so is every process it starts.
	if len(cfg.Files) > 0 {
		if err := mountFiles(cfg.Files); err != nil {
			return nil, nsSetupError(err)
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return nil, nsSetupError(fmt.Errorf("set hostname: %w", err))
		}
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nsSetupError(fmt.Errorf("open netlink: %w", err))
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return nil, nsSetupError(fmt.Errorf("set lo up: %w", err))
	}
	if !cfg.UserNet {
		return nil, nil
	}
	tap, err := openTAP(tapName)
	if err != nil {
		return nil, err
	}
	if err := configureTAP(h, lo, cfg); err != nil {
		tap.Close()
		return nil, nsSetupError(err)
	}
	return tap, nil
}

func configureTAP(h *netlink.Handle, lo netlink.Link, cfg rootlessChildConfig) error {
	link, err := h.LinkByName(tapName)
	if err != nil {
		return fmt.Errorf("find %s: %w", tapName, err)
	}
	if err := h.LinkSetMTU(link, int(cfg.MTU)); err != nil {
		return fmt.Errorf("set %s mtu %d: %w", tapName, cfg.MTU, err)
	}
	guest := &net.IPNet{IP: cfg.Guest.Addr().AsSlice(), Mask: net.CIDRMask(cfg.Guest.Bits(), 32)}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: guest}); err != nil {
		return fmt.Errorf("add address %s to %s: %w", cfg.Guest, tapName, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", tapName, err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: cfg.Gateway.AsSlice()}); err != nil {
		return fmt.Errorf("add default route via %s: %w", cfg.Gateway, err)
	}
	if cfg.Guest6.IsValid() {
		if err := configureTAP6(h, link, cfg); err != nil {
			return err
		}
	}
	if len(cfg.Ports) == 0 {
		return nil
	}
	// Replies of published ports: an "ip rule" per port, matching the
	// protocol and source port (and for TCP the guest address), sends them
	// to a table where everything is local, so the kernel delivers them
	// over lo to the transparent inner socket. Matching on the port (not on
	// a connmark) needs no netfilter in the namespace and works alike for
	// TCP and UDP; it only assumes that CMD does not also originate
	// connections from a published port, which a server cannot do while
	// it listens there. A UDP server's socket bound to no address sends
	// its answers with no source yet when the rules are matched, so UDP's
	// rules leave the source out.
	guests := []netip.Addr{cfg.Guest.Addr()}
	if cfg.Guest6.IsValid() {
		guests = append(guests, cfg.Guest6.Addr())
	}
	for _, guest := range guests {
		if err := routePublishedReplies(h, lo, guest, cfg.Ports); err != nil {
			return err
		}
	}
	return nil
}

// configureTAP6 gives tap0 its IPv6 address, without duplicate address
// detection (nothing else is on the link, and a tentative address would fail
// the command's first connections), and the IPv6 default route.
func configureTAP6(h *netlink.Handle, link netlink.Link, cfg rootlessChildConfig) error {
	guest := &net.IPNet{IP: cfg.Guest6.Addr().AsSlice(), Mask: net.CIDRMask(cfg.Guest6.Bits(), 128)}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: guest, Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("add address %s to %s: %w", cfg.Guest6, tapName, err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: cfg.Gateway6.AsSlice(),
		Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}); err != nil {
		return fmt.Errorf("add default route via %s: %w", cfg.Gateway6, err)
	}
	return nil
}

// routePublishedReplies adds, for guest's family, the table whose every
// address is local and a rule per published port that sends the replies from
// it there.
func routePublishedReplies(h *netlink.Handle, lo netlink.Link, guest netip.Addr, ports []GuestPort) error {
	family, bits := unix.AF_INET, 32
	all := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if guest.Is6() {
		family, bits = unix.AF_INET6, 128
		all = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	if err := h.RouteAdd(&netlink.Route{
		Table: publishRouteTable, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST,
		Dst: all, LinkIndex: lo.Attrs().Index,
	}); err != nil {
		return fmt.Errorf("add local route %s to table %d: %w", all, publishRouteTable, err)
	}
	from := &net.IPNet{IP: guest.AsSlice(), Mask: net.CIDRMask(bits, bits)}
	seen := make(map[string]bool)
	for _, p := range ports {
		key := fmt.Sprintf("%s/%d", p.Proto, p.Port)
		if seen[key] {
			continue
		}
		seen[key] = true
		rule := netlink.NewRule()
		rule.Family = family
		rule.Priority = publishRulePrio
		rule.Table = publishRouteTable
		rule.Src = from
		rule.IPProto = unix.IPPROTO_TCP
		if p.Proto == "udp" {
			rule.IPProto, rule.Src = unix.IPPROTO_UDP, nil
		}
		rule.Sport = netlink.NewRulePortRange(p.Port, p.Port)
		if err := h.RuleAdd(rule); err != nil {
			return fmt.Errorf("add rule for published port %s from %s: %w", key, guest, err)
		}
	}
	return nil
}

// openTAP creates a TAP device in the current network namespace and
// returns its queue. IFF_VNET_HDR lets usernet skip checksums end to end.
func openTAP(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return nil, fmt.Errorf("%w: open /dev/net/tun: %v: it is 0600 without udev; Debian's udev makes it 0666 (chmod 0666 /dev/net/tun)", ErrTUNUnavailable, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open /dev/net/tun: %v", ErrTUNUnavailable, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, nsSetupError(fmt.Errorf("create %s: %w", name, err))
	}
	return os.NewFile(uintptr(fd), name), nil
}

// nsSetupError marks a permission failure inside our own namespaces as the
// user namespace being restricted (AppArmor lets the namespace be created
// but withholds its capabilities).
func nsSetupError(err error) error {
	if errors.Is(err, unix.EPERM) {
		return userNamespaceError(err)
	}
	return err
}

// serveInnerSockets answers the parent's requests for sockets born in this
// namespace, with IP_TRANSPARENT (needs CAP_NET_ADMIN here) so that the
// parent can bind them to a client's address.
func serveInnerSockets(c *net.UnixConn) {
	for {
		m, files, err := recvRootless(c)
		closeFiles(files)
		if err != nil {
			return
		}
		f, err := transparentSocket(m.Proto)
		if err != nil {
			if sendRootless(c, rootlessMessage{Op: opError, Err: err.Error()}) != nil {
				return
			}
			continue
		}
		err = sendRootless(c, rootlessMessage{Op: opSocket}, f)
		f.Close()
		if err != nil {
			return
		}
	}
}

func transparentSocket(proto string) (*os.File, error) {
	var typ int
	switch proto {
	case "tcp", "tcp6":
		typ = unix.SOCK_STREAM
	case "udp", "udp6":
		typ = unix.SOCK_DGRAM
	default:
		return nil, fmt.Errorf("make inner socket: unknown protocol %q", proto)
	}
	family, level, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_TRANSPARENT
	if strings.HasSuffix(proto, "6") {
		family, level, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("make inner socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("make inner socket transparent: %w", err)
	}
	return os.NewFile(uintptr(fd), "inner"), nil
}

// serveExec runs ExecRootless requests: each connection carries one
// command and its stdio; the command is killed when the client goes away.
func serveExec(ln net.Listener, r *childReaper, cfg rootlessChildConfig) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go handleExec(c.(*net.UnixConn), r, cfg)
	}
}

func handleExec(c *net.UnixConn, r *childReaper, cfg rootlessChildConfig) {
	defer c.Close()
	if !peerIsSelf(c) {
		return
	}
	m, files, err := recvRootless(c)
	defer closeFiles(files)
	if err != nil || m.Op != opExec || len(files) != 3 || len(m.Argv) == 0 {
		sendRootless(c, rootlessMessage{Op: opError, Err: "bad exec request"})
		return
	}
	env := m.Env
	if env == nil {
		env = cfg.Env
	}
	stdio := make([]uintptr, 3)
	for i, f := range files {
		stdio[i] = f.Fd()
	}
	pid, exited, err := r.start(m.Argv, env, cfg.Dir, stdio)
	closeFiles(files)
	if err != nil {
		sendRootless(c, rootlessMessage{Op: opError, Err: err.Error()})
		return
	}
	if sendRootless(c, rootlessMessage{Op: opStarted, PID: pid}) != nil {
		unix.Kill(pid, unix.SIGKILL)
		<-exited
		return
	}
	clientGone := make(chan struct{})
	go func() {
		recvRootless(c)
		close(clientGone)
	}()
	select {
	case code := <-exited:
		sendRootless(c, rootlessMessage{Op: opExited, Code: code})
	case <-clientGone:
		unix.Kill(pid, unix.SIGKILL)
		<-exited
	}
}

// peerIsSelf checks that the exec client runs as our user (the runtime
// directory's 0700 already keeps others out).
func peerIsSelf(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return err == nil && cred != nil && int(cred.Uid) == os.Getuid()
}

// childReaper starts processes and collects every exit in the namespace:
// as PID 1 the helper inherits orphans, so it waits for any child and
// routes the statuses of the ones it started to their waiters.
type childReaper struct {
	mu      sync.Mutex
	waiters map[int]chan int
}

func (r *childReaper) start(argv, env []string, dir string, stdio []uintptr) (int, <-chan int, error) {
	path, err := lookPathIn(argv[0], env)
	if err != nil {
		return 0, nil, err
	}
	// Holding mu across the fork keeps reap from dropping the status
	// of a child that exits before it is registered.
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Dir: dir, Env: env, Files: stdio})
	if err != nil {
		return 0, nil, fmt.Errorf("exec %s: %w", argv[0], err)
	}
	ch := make(chan int, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

func (r *childReaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		ch := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if ch != nil {
			ch <- exitCode(ws)
		}
	}
}

// exitCode follows the shell: 128+n for death by signal n.
func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// lookPathIn resolves a command name with the PATH of env (the
// container's), not the helper's.
func lookPathIn(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %q: executable file not found in $PATH", name)
}
