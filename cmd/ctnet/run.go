package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/network"
	"github.com/ctnet/ctnet/sandbox"
)

// monitorArg is the hidden first argument of the process `run -d` leaves behind to
// supervise a detached container.
const monitorArg = "__ctnet_monitor"

type runFlags struct {
	name, network, ip, hostname string
	ip6, mac                    string
	publish, dns, addHosts      []string
	aliases, labels             []string
	ingressRate, egressRate     string
	detach, autoRemove          bool
	userNet                     network.UserNetSpec
	proc                        processFlags
}

func (a *app) runCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD [ARG...]",
		Short: "Run a command in a new container network",
		Long: `Run CMD in its own network namespace attached to a network (the default network
"bridge" unless --network says otherwise), with stdio attached; ctnet exits with CMD's
status and releases the container's network when CMD ends. With -d, ctnet prints the
container's ID and leaves a small supervisor process that releases it when CMD ends.

--network takes a network name or one of Docker's modes: host (the host's own stack),
none (loopback only) or container:NAME (another container's namespace).

Run by an unprivileged user, ctnet makes a user namespace too and gives the container a
user-mode network (usernet): tap0 with 10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3,
and fd00::100/64, gateway fd00::2, DNS fd00::3, TCP, UDP and ping to wherever the user
can reach, and published ports (on IPv4 and IPv6) that keep the client's address.
` + processHelp + ` With -d, the output goes to the container's log
(ctnet logs) and -t gives no terminal, as ctnet has no attach; -i keeps stdin open.`,
		Example: `  ctnet run --name web -p 8080:80 -- python3 -m http.server 80
  ctnet run -d --name db --network backend --ip 172.30.0.10 -l env=test -- redis-server
  ctnet run --network none -- ip addr
  ctnet run -it --rm -e TERM -w /tmp -- sh`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := f.spec(args)
			if err != nil {
				return &exitError{code: exitRunFailure, err: err}
			}
			opts, err := f.proc.runOptions(spec.Hostname)
			if err != nil {
				return &exitError{code: exitRunFailure, err: err}
			}
			if a.dryRun {
				return a.runDryRun(spec)
			}
			if f.detach {
				return a.runDetached(spec, opts, f.proc.interactive)
			}
			return a.runForeground(spec, opts, &f.proc)
		},
	}
	cmd.Flags().SetInterspersed(false)
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "container name (default: a generated one)")
	fl.StringVar(&f.network, "network", "", "network name, or host, none, container:NAME (default: bridge)")
	fl.StringVar(&f.ip, "ip", "", "IPv4 address on the network (default: the next free one)")
	fl.StringVar(&f.ip6, "ip6", "", "IPv6 address on a network with IPv6 (default: the next free one)")
	fl.StringVar(&f.mac, "mac-address", "", "the interface's MAC address, unicast, such as 02:42:0a:58:00:05 (default: one derived from its address)")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a port: [HOSTIP:][HOSTPORT[-END]:]PORT[-END][/tcp|/udp|/sctp], an IPv6 HOSTIP in brackets ([::1] for unprivileged users only) (repeatable)")
	fl.StringVar(&f.hostname, "hostname", "", "hostname inside the container (default: its short ID)")
	fl.BoolVarP(&f.detach, "detach", "d", false, "run in the background and print the container ID")
	fl.BoolVar(&f.autoRemove, "rm", false, "remove the container's record when it exits")
	fl.StringVar(&f.userNet.CIDR, "cidr", "", "user-mode network subnet (unprivileged users; default 10.0.2.0/24)")
	fl.IntVar(&f.userNet.MTU, "mtu", 0, "user-mode network MTU (unprivileged users; default 65520)")
	fl.StringArrayVar(&f.dns, "dns", nil, "nameserver of the container's resolv.conf (default: the host's it can reach; on a network you created, where its embedded DNS server at 127.0.0.11 forwards; for unprivileged users, where 10.0.2.3 forwards; repeatable)")
	fl.StringArrayVar(&f.addHosts, "add-host", nil, "NAME:IP line for the container's /etc/hosts (repeatable)")
	fl.StringArrayVar(&f.aliases, "network-alias", nil, "another name other containers on its network resolve it by (a network you created; repeatable)")
	fl.StringArrayVarP(&f.labels, "label", "l", nil, "set a KEY=VALUE label on the container, which ps --filter label= finds (repeatable)")
	fl.BoolVar(&f.userNet.AllowHostLoopback, "allow-host-loopback", false, "let the container reach the host's 127.0.0.1 at 10.0.2.2 (unprivileged users)")
	f.proc.register(fl)
	addBandwidthFlags(fl, &f)
	return cmd
}

func (f *runFlags) spec(argv []string) (network.ContainerSpec, error) {
	spec := network.ContainerSpec{Name: f.name, Network: network.ParseMode(f.network), IP: f.ip, IP6: f.ip6, MAC: f.mac, Hostname: f.hostname,
		Command: argv, Detach: f.detach, AutoRemove: f.autoRemove, UserNet: f.userNet, DNS: f.dns, ExtraHosts: f.addHosts,
		Aliases: f.aliases}
	labels, err := network.ParseLabels(f.labels)
	if err != nil {
		return spec, err
	}
	spec.Labels = labels
	for _, p := range f.publish {
		ps, err := network.ParsePort(p)
		if err != nil {
			return spec, err
		}
		spec.Ports = append(spec.Ports, ps)
	}
	for _, r := range []struct {
		field, value string
		rate         *uint64
	}{{"Bandwidth.IngressRate", f.ingressRate, &spec.Bandwidth.IngressRate}, {"Bandwidth.EgressRate", f.egressRate, &spec.Bandwidth.EgressRate}} {
		if r.value == "" {
			continue
		}
		rate, err := network.ParseRate(r.value)
		if err != nil {
			return spec, &network.FieldError{Field: r.field, Value: r.value, Err: err}
		}
		*r.rate = rate
	}
	return spec, nil
}

// addBandwidthFlags adds the flags that limit a container's interface.
func addBandwidthFlags(fl *pflag.FlagSet, f *runFlags) {
	fl.StringVar(&f.ingressRate, "ingress-rate", "", "limit traffic into the container, in bits per second: 10M or 10mbit, 500k or 500kbit, 1G or 1gbit (default: no limit)")
	fl.StringVar(&f.egressRate, "egress-rate", "", "limit traffic out of the container, in bits per second, as --ingress-rate (default: no limit)")
}

func (a *app) runForeground(spec network.ContainerSpec, opts network.RunOptions, pf *processFlags) error {
	m, err := a.manager()
	if err != nil {
		return &exitError{code: exitRunFailure, err: err}
	}
	defer m.Close()
	term, err := attachStdio(pf, &opts)
	if err != nil {
		return err
	}
	// Signals arriving from now on are for the container: they are forwarded once it runs.
	sigs := notifyContainerSignals()
	defer signal.Stop(sigs)
	p, err := m.Run(context.Background(), spec, opts)
	if err != nil {
		term.close()
		return &exitError{code: runFailureCode(err), err: err}
	}
	code, err := waitForwarding(p, sigs, !isTerminal(os.Stdin))
	term.close()
	if err != nil {
		return &exitError{code: code, err: err}
	}
	return &exitError{code: code}
}

// notifyContainerSignals catches the signals a container's supervisor forwards.
func notifyContainerSignals() chan os.Signal {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGINT)
	return sigs
}

// waitForwarding waits for the container's process, forwarding it the signals that
// arrive on sigs; SIGINT only when forwardSIGINT, since a terminal sends it to the
// container's process group itself.
func waitForwarding(p *network.Process, sigs <-chan os.Signal, forwardSIGINT bool) (int, error) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				if s != syscall.SIGINT || forwardSIGINT {
					p.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	defer close(done)
	return p.Wait()
}

// runFailureCode is ctnet's status for a run that failed before the container's
// command ran: the command's, as a shell's, when the container was made but the
// command did not start; otherwise ctnet's own.
func runFailureCode(err error) int {
	if se, ok := errors.AsType[*network.StartError](err); ok {
		return se.Code
	}
	return exitRunFailure
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// runDetached starts the supervisor, which creates and runs the container, and waits
// only until it reports the container running.
func (a *app) runDetached(spec network.ContainerSpec, opts network.RunOptions, interactive bool) error {
	self, err := os.Executable()
	if err != nil {
		return &exitError{code: exitRunFailure, err: err}
	}
	input, err := json.Marshal(monitorInput{Spec: spec, Env: opts.Env, Dir: opts.Dir, User: opts.User, Interactive: interactive})
	if err != nil {
		return &exitError{code: exitRunFailure, err: err}
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return &exitError{code: exitRunFailure, err: err}
	}
	defer statusR.Close()
	root := a.root
	if root != "" {
		if root, err = filepath.Abs(root); err != nil {
			return &exitError{code: exitRunFailure, err: err}
		}
	}
	cmd := exec.Command(self, monitorArg)
	cmd.Env = append(os.Environ(), "CTNET_ROOT="+root, "CTNET_DEBUG="+strconv.FormatBool(a.debug))
	cmd.Stdin = strings.NewReader(string(input))
	cmd.ExtraFiles = []*os.File{statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// With --debug, the supervisor's log of making the container comes here through
	// a pipe of its own (descriptor 4), which it closes once the container runs:
	// its stderr outlives this command.
	startLog := func() {}
	if a.debug {
		logR, logW, err := os.Pipe()
		if err != nil {
			return &exitError{code: exitRunFailure, err: err}
		}
		defer logR.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, logW)
		defer logW.Close()
		copied := make(chan struct{})
		go func() { io.Copy(a.stderr, logR); close(copied) }()
		startLog = func() { logW.Close(); <-copied }
	}
	if err := cmd.Start(); err != nil {
		statusW.Close()
		return &exitError{code: exitRunFailure, err: fmt.Errorf("start supervisor: %w", err)}
	}
	statusW.Close()
	line, _ := bufio.NewReader(statusR).ReadString('\n')
	startLog()
	word, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch word {
	case "ok":
		cmd.Process.Release()
		fmt.Fprintln(a.stdout, rest)
		return nil
	case "error":
		cmd.Wait()
		codeText, msg, _ := strings.Cut(rest, " ")
		code, _ := strconv.Atoi(codeText)
		return &exitError{code: code, err: errors.New(msg)}
	}
	err = cmd.Wait()
	return &exitError{code: exitRunFailure, err: fmt.Errorf("supervisor ended before the container started: %v", err)}
}

// monitorInput is what `run -d` hands its supervisor on stdin.
type monitorInput struct {
	Spec        network.ContainerSpec
	Env         []string
	Dir         string
	User        *syscall.Credential
	Interactive bool
}

// runMonitor is the detached supervisor: it creates the container, runs its process
// with output to a log file, and releases the network when the process ends.
func runMonitor() int {
	// The container must not inherit the status pipe: while it held it open, a
	// supervisor that died before reporting would leave `run -d` waiting for the
	// container to end.
	syscall.CloseOnExec(3)
	status := os.NewFile(3, "status")
	debugging := os.Getenv("CTNET_DEBUG") == "true"
	log := &handoff{w: os.Stderr}
	if debugging {
		syscall.CloseOnExec(4) // as the status pipe: run -d waits for its end
		log.w = os.NewFile(4, "start log")
	}
	report := func(format string, args ...any) {
		if status != nil {
			fmt.Fprintf(status, format+"\n", args...)
			status.Close()
			status = nil
			log.to(os.Stderr)
		}
	}
	var in monitorInput
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		report("error %d read container spec: %v", exitRunFailure, err)
		return exitRunFailure
	}
	opts := network.RunOptions{Log: true, Env: in.Env, Dir: in.Dir, User: in.User}
	if in.Interactive {
		// Nobody writes to it, but a command reading stdin (a shell) waits
		// instead of ending, as with Docker's -d -i.
		r, w, err := os.Pipe()
		if err != nil {
			report("error %d %s", exitRunFailure, oneLine(err))
			return exitRunFailure
		}
		defer w.Close()
		opts.Stdin = r
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	a := &app{root: os.Getenv("CTNET_ROOT"), debug: debugging, stderr: log}
	m, err := a.manager()
	if err != nil {
		report("error %d %s", exitRunFailure, oneLine(err))
		return exitRunFailure
	}
	defer m.Close()
	sigs := notifyContainerSignals()
	defer signal.Stop(sigs)
	p, err := m.Run(context.Background(), in.Spec, opts)
	if opts.Stdin != nil {
		opts.Stdin.Close() // the command has its own copy
	}
	if err != nil {
		report("error %d %s", runFailureCode(err), oneLine(err))
		return runFailureCode(err)
	}
	report("ok %s", p.Container.ID)
	stopWatching := a.watchFirewall(p.Container)
	// From here on the supervisor only waits: give back what starting took.
	m.CloseIdleSockets()
	debug.FreeOSMemory()
	code, _ := waitForwarding(p, sigs, true)
	stopWatching()
	return code
}

// handoff is a writer whose destination changes: the supervisor's log goes to run -d's
// stderr while it makes the container, then where its own stderr goes.
type handoff struct {
	mu sync.Mutex
	w  io.Writer
}

func (h *handoff) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.w.Write(p)
}

// to sends what follows to w, closing the writer it replaces unless it is stderr.
func (h *handoff) to(w io.Writer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.w.(io.Closer); ok && h.w != os.Stderr {
		c.Close()
	}
	h.w = w
}

func (a *app) execCommand() *cobra.Command {
	var pf processFlags
	cmd := &cobra.Command{
		Use:   "exec NAME -- CMD [ARG...]",
		Short: "Run a command inside a running container's network namespace",
		Long: `Run CMD inside the container's network (and UTS) namespace with stdio attached, as
nsenter --net does; ctnet exits with CMD's status.
` + processHelp + `
In an unprivileged user's container, -w and -u are refused.`,
		Example: "  ctnet exec web -- ip addr\n  ctnet exec -it -u 1000 -w /tmp web -- sh",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return &exitError{code: exitRunFailure, err: err}
			}
			defer m.Close()
			c, err := m.Container(args[0])
			if err != nil {
				return &exitError{code: exitRunFailure, err: err}
			}
			if c.State == network.StateExited {
				return &exitError{code: exitRunFailure, err: fmt.Errorf("container %s is not running", c.Name)}
			}
			argv := args[1:]
			if argv[0] == "--" {
				argv = argv[1:]
			}
			if len(argv) == 0 {
				return &exitError{code: exitRunFailure, err: usage("exec needs a command after the container name")}
			}
			rootless := m.Rootless() && c.Mode != network.ModeHost
			if rootless && (pf.workdir != "" || pf.user != "") {
				return &exitError{code: exitRunFailure, err: usage("-w and -u are not available in an unprivileged user's container")}
			}
			opts, err := pf.runOptions(c.HostnameOrID())
			if err != nil {
				return &exitError{code: exitRunFailure, err: err}
			}
			term, err := attachStdio(&pf, &opts)
			if err != nil {
				return err
			}
			defer term.close()
			if rootless {
				return execRootless(m, c, argv, opts)
			}
			spec := sandbox.Spec{Argv: argv, NetNS: c.NetNS, Stdout: opts.Stdout, Stderr: opts.Stderr,
				Env: opts.Env, Dir: opts.Dir, Credential: opts.User, TTY: opts.TTY}
			if opts.Stdin != nil {
				spec.Stdin = opts.Stdin // a nil *os.File would not be a nil io.Reader
			}
			if c.Process.Alive() && c.Mode != network.ModeHost {
				spec.UTSNS = "/proc/" + strconv.Itoa(c.Process.PID) + "/ns/uts"
			}
			filesOf := c
			if c.Mode == network.ModeContainer {
				if filesOf, err = m.Container(c.SharedWith); err != nil {
					return &exitError{code: exitRunFailure, err: err}
				}
			}
			setMounts(m, filesOf, &spec)
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGINT)
			defer signal.Stop(sigs)
			p, err := sandbox.Start(spec)
			if err != nil {
				return &exitError{code: startFailureCode(err), err: err}
			}
			forwardSIGINT := !isTerminal(os.Stdin)
			go func() {
				for s := range sigs {
					if s != syscall.SIGINT || forwardSIGINT {
						p.Process.Signal(s)
					}
				}
			}()
			p.Wait()
			return &exitError{code: sandbox.ExitCode(p.ProcessState)}
		},
	}
	cmd.Flags().SetInterspersed(false)
	pf.register(cmd.Flags())
	return cmd
}

// execRootless runs argv in an unprivileged user's container through its helper,
// which alone can enter the container's user namespace.
func execRootless(m *network.Manager, c *network.Container, argv []string, opts network.RunOptions) error {
	dir := c.RuntimeDir
	if c.Mode == network.ModeContainer {
		owner, err := m.Container(c.SharedWith)
		if err != nil {
			return &exitError{code: exitRunFailure, err: err}
		}
		dir = owner.RuntimeDir
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	code, err := sandbox.ExecRootless(ctx, dir, argv, opts.Env, opts.Stdin, opts.Stdout, opts.Stderr)
	if err != nil {
		return &exitError{code: exitRunFailure, err: err}
	}
	return &exitError{code: code}
}
