// Command ctnet gives processes their own isolated network on a Linux host: network
// namespaces, veth pairs, bridges, NAT and published ports, or a user-mode network
// for unprivileged users.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctnet/ctnet/internal/linkreaper"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/network"
	"github.com/ctnet/ctnet/sandbox"
)

// Exit statuses of ctnet itself, as Docker uses them for run and exec; otherwise a
// command's own status passes through.
const (
	exitFailure        = 1
	exitRunFailure     = 125
	exitCannotExecute  = 126
	exitCommandMissing = 127
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case sandbox.RootlessChildArg:
			sandbox.RootlessChildMain()
			return
		case monitorArg:
			os.Exit(runMonitor())
		case linkreaper.Arg:
			os.Exit(linkreaper.Main())
		}
	}
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// exitError carries an exit status up to main: the command's own when it ran, or ctnet's.
type exitError struct {
	code int
	err  error // nil when the status is the command's own
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// app is the state shared by all subcommands.
type app struct {
	root  string
	debug bool
	// dryRun and explain are the global flags; journal is theirs (startJournal).
	dryRun, explain bool
	journal         *netns.Journal
	stdin           io.Reader
	stdout          io.Writer
	stderr          io.Writer
	// stubs are the commands not built yet, with their builders (tree.go).
	stubs map[*cobra.Command]func() *cobra.Command
}

func execute(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	cmd := a.rootCommand()
	cmd.SetArgs(args)
	cmd.SetIn(stdin)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	dockerErrors(cmd)
	a.buildReached(cmd, args)
	ran, err := cmd.ExecuteC()
	if err == nil {
		return 0
	}
	if ue, ok := asUsageError(err); ok {
		return reportUsage(stderr, ran, ue)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "ctnet: %s\n", oneLine(ee.err))
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "ctnet: %s\n", oneLine(err))
	return exitFailure
}

// buildVersion is the version the build stamps: go build -ldflags "-X
// main.buildVersion=$(git describe --always --dirty)".
var buildVersion string

// version names the build: the stamped version, else the module version when
// installed with go install, else the commit Go recorded it was built from, which is
// what a bug report needs.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return fmt.Sprintf("%s (%s, %s/%s)", versionOf(info), info.GoVersion, runtime.GOOS, runtime.GOARCH)
}

func versionOf(info *debug.BuildInfo) string {
	if buildVersion != "" {
		return buildVersion
	}
	v := info.Main.Version
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" && (v == "" || v == "(devel)") {
		v = rev
		if len(v) > 12 {
			v = v[:12]
		}
		if settings["vcs.modified"] == "true" {
			v += "-dirty"
		}
	}
	if v == "" || v == "(devel)" {
		return "unknown" // built with neither -ldflags nor VCS data (see the README's build command)
	}
	return v
}

// oneLine keeps an error to the single line users read first, with nothing in it a
// terminal would obey (errors can quote names chosen inside a container).
func oneLine(err error) string {
	return printable(strings.ReplaceAll(inFlags(err), "\n", "; "), "")
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "ctnet",
		Short: "Isolated networks for processes on one Linux host",
		Long: `ctnet gives processes ("containers") their own network: a network namespace, a veth
pair into a bridge, an address, routes, NAT to the outside, published ports and isolation
between networks. Unprivileged users get a user-mode network instead.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version(),
	}
	root.SetVersionTemplate("ctnet {{.Version}}\n")
	root.PersistentFlags().StringVar(&a.root, "root", os.Getenv("CTNET_ROOT"),
		"directory for all of ctnet's state and runtime files (default /var/lib/ctnet and /run/ctnet; env CTNET_ROOT)")
	root.PersistentFlags().BoolVar(&a.debug, "debug", false, "log what ctnet does to stderr")
	a.addDryRunFlags(root)
	a.withLazyTree(root)
	a.addLazy(root, lazyCommand{name: "run", build: a.runCommand}, lazyCommand{name: "exec", build: a.execCommand},
		lazyCommand{name: "ps", build: a.psCommand}, lazyCommand{name: "stop", build: a.stopCommand},
		lazyCommand{name: "rm", build: a.rmCommand}, lazyCommand{name: "inspect", build: a.inspectCommand},
		lazyCommand{name: "logs", build: a.logsCommand}, lazyCommand{name: "port", build: a.portCommand},
		lazyCommand{name: "attach", build: a.attachCommand}, lazyCommand{name: "network", build: a.networkCommand},
		lazyCommand{name: "gc", build: a.gcCommand}, lazyCommand{name: "trace", build: a.traceCommand},
		lazyCommand{name: "graph", build: a.graphCommand}, lazyCommand{name: "doctor", build: a.doctorCommand},
		lazyCommand{name: "watch", build: a.watchCommand}, lazyCommand{name: "version", build: a.versionCommand},
		lazyCommand{name: "container", build: a.containerCommand})
	a.dockerHelp(root)
	return root
}

func (a *app) logger() *slog.Logger {
	level := slog.LevelWarn
	if a.debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
}

// manager opens the root's manager: an unprivileged user manages their own
// containers, on user-mode networks. CTNET_FASTPATH=off keeps containers' traffic
// on the bridge (no eBPF shortcut between containers of a network).
func (a *app) manager() (*network.Manager, error) {
	return network.New(network.Options{Root: a.root, Logger: a.logger(), Rootless: os.Geteuid() != 0, UserNet: startUserNet, Journal: a.journal,
		DeleteRetired: linkreaper.Start, NoFastPath: os.Getenv("CTNET_FASTPATH") == "off"})
}

// withManager runs fn with the root's manager, closed afterwards.
func (a *app) withManager(fn func(*network.Manager) error) error {
	m, err := a.manager()
	if err != nil {
		return err
	}
	defer m.Close()
	return fn(m)
}

// withRootManager is withManager for commands that only root can carry out.
func (a *app) withRootManager(what string, fn func(*network.Manager) error) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s needs root: unprivileged users have user-mode networks only (ctnet run, ps, exec, stop, rm)", what)
	}
	return a.withManager(fn)
}
