package main

import (
	"bufio"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/ctnet/ctnet/network"
)

// processFlags are Docker's flags for the process run and exec start: -i, -t, -e,
// --env-file, -w and -u.
type processFlags struct {
	interactive, tty bool
	env, envFiles    []string
	workdir, user    string
}

func (p *processFlags) register(fl *pflag.FlagSet) {
	fl.BoolVarP(&p.interactive, "interactive", "i", false, "keep stdin open (without -i the command's stdin is /dev/null)")
	fl.BoolVarP(&p.tty, "tty", "t", false, "give the command a terminal of its own (a pty); with -i, stdin must be a terminal")
	fl.StringArrayVarP(&p.env, "env", "e", nil, "set KEY=VALUE (or KEY, taken from ctnet's environment) in the command's environment, which is then not inherited (repeatable)")
	fl.StringArrayVar(&p.envFiles, "env-file", nil, "read KEY=VALUE lines for the environment from a file, as -e (repeatable)")
	fl.StringVarP(&p.workdir, "workdir", "w", "", "working directory, an absolute path (default: ctnet's)")
	fl.StringVarP(&p.user, "user", "u", "", "run as USER or UID[:GID] (root containers; default: root)")
}

// processHelp says what a command inherits, for run's and exec's --help.
const processHelp = `
Without -e or --env-file the command inherits ctnet's environment; with them its
environment is PATH, HOME, HOSTNAME (with --hostname), TERM (with -t) and what they
set, as Docker's. Without -w it starts in ctnet's working directory; without -u it
runs as root (an unprivileged user's container: as that user). Its stdin is
/dev/null unless -i; with -t it gets a pty of its own, whose other end ctnet copies
to and from the terminal.`

// defaultPath is Docker's PATH for a container whose image sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runOptions are the command's environment, directory and user as the flags say.
func (p *processFlags) runOptions(hostname string) (network.RunOptions, error) {
	var opts network.RunOptions
	cred, home, err := p.credential()
	if err != nil {
		return opts, err
	}
	if err := p.checkWorkdir(); err != nil {
		return opts, err
	}
	env, err := p.environment(hostname, home)
	if err != nil {
		return opts, err
	}
	return network.RunOptions{Env: env, Dir: p.workdir, User: cred}, nil
}

// attachStdio gives the command ctnet's stdout and stderr, and stdin with -i; or,
// with -t, a terminal of its own.
func attachStdio(p *processFlags, opts *network.RunOptions) (*terminal, error) {
	if !p.tty {
		opts.Stdout, opts.Stderr = os.Stdout, os.Stderr
		if p.interactive {
			opts.Stdin = os.Stdin
		}
		return nil, nil
	}
	if p.interactive && !isTerminal(os.Stdin) {
		return nil, &exitError{code: exitFailure, err: errNotATerminal}
	}
	t, err := openTerminal(os.Stdin, os.Stdout, p.interactive)
	if err != nil {
		return nil, &exitError{code: exitRunFailure, err: err}
	}
	opts.Stdin, opts.Stdout, opts.Stderr, opts.TTY = t.slave, t.slave, t.slave, true
	return t, nil
}

// credential is -u: nil when not given.
func (p *processFlags) credential() (*syscall.Credential, string, error) {
	if p.user == "" {
		return nil, "", nil
	}
	name, group, _ := strings.Cut(p.user, ":")
	var uid, gid uint64
	home := "/"
	u, err := user.Lookup(name)
	if err != nil {
		u, err = user.LookupId(name)
	}
	if err == nil {
		uid, _ = strconv.ParseUint(u.Uid, 10, 32)
		gid, _ = strconv.ParseUint(u.Gid, 10, 32)
		home = u.HomeDir
	} else if uid, err = strconv.ParseUint(name, 10, 32); err != nil {
		return nil, "", usage("bad --user %q: no such user; use a user name or UID[:GID]", p.user)
	}
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			gid, _ = strconv.ParseUint(g.Gid, 10, 32)
		} else if gid, err = strconv.ParseUint(group, 10, 32); err != nil {
			return nil, "", usage("bad --user %q: no such group; use a group name or GID", p.user)
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, home, nil
}

// checkWorkdir refuses a -w that the command could not start in.
func (p *processFlags) checkWorkdir() error {
	if p.workdir == "" {
		return nil
	}
	if !filepath.IsAbs(p.workdir) {
		return usage("bad --workdir %q: use an absolute path", p.workdir)
	}
	if fi, err := os.Stat(p.workdir); err != nil || !fi.IsDir() {
		return usage("bad --workdir %q: no such directory", p.workdir)
	}
	return nil
}

// environment is the command's: nil (ctnet's, inherited) without -e and
// --env-file, else Docker's base with what they set.
func (p *processFlags) environment(hostname, home string) ([]string, error) {
	if len(p.env) == 0 && len(p.envFiles) == 0 {
		return nil, nil
	}
	if home == "" {
		home = "/root"
	}
	vars := map[string]string{"PATH": defaultPath, "HOME": home}
	order := []string{"PATH", "HOME"}
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	if hostname != "" {
		set("HOSTNAME", hostname)
	}
	if p.tty {
		set("TERM", "xterm")
	}
	var given []string
	for _, file := range p.envFiles {
		lines, err := readEnvFile(file)
		if err != nil {
			return nil, err
		}
		given = append(given, lines...)
	}
	given = append(given, p.env...)
	for _, kv := range given {
		k, v, hasValue := strings.Cut(kv, "=")
		if k == "" || strings.ContainsAny(k, " \t") {
			return nil, usage("bad --env %q: use KEY=VALUE or KEY", kv)
		}
		if !hasValue {
			var ok bool
			if v, ok = os.LookupEnv(k); !ok {
				continue // as Docker's: KEY alone passes KEY only when it is set
			}
		}
		set(k, v)
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env, nil
}

// readEnvFile reads Docker's --env-file: KEY=VALUE or KEY lines, blank lines and
// lines starting with # skipped, values taken as they are (no quotes removed).
func readEnvFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usage("bad --env-file: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimLeft(sc.Text(), " \t")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, _, _ := strings.Cut(line, "="); strings.ContainsAny(k, " \t") || k == "" {
			return nil, usage("bad --env-file %s, line %d: %q is not KEY=VALUE", path, n, line)
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read --env-file %s: %w", path, err)
	}
	return out, nil
}
