package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

var (
	// ErrUserNamespaceForbidden means the kernel does not let this user
	// create (or use) a user namespace; the message names the sysctl.
	ErrUserNamespaceForbidden = errors.New("unprivileged user namespaces are not allowed")
	// ErrTUNUnavailable means /dev/net/tun cannot be used to make tap0.
	ErrTUNUnavailable = errors.New("/dev/net/tun unavailable")
)

// idRange is one line of /etc/subuid or /etc/subgid.
type idRange struct {
	start, count int
}

// subIDRanges returns the ranges of path that belong to the user, named
// either by name or by numeric id, in file order.
func subIDRanges(path, name string, id int) ([]idRange, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var ranges []idRange
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(id)) {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || count <= 0 || start < 0 {
			continue
		}
		ranges = append(ranges, idRange{start, count})
	}
	return ranges, nil
}

// idMapArgs renders the mapping "0 → own id, 1.. → subordinate ranges" as
// newuidmap/newgidmap arguments after the pid.
func idMapArgs(own int, ranges []idRange) []string {
	args := []string{"0", strconv.Itoa(own), "1"}
	next := 1
	for _, r := range ranges {
		args = append(args, strconv.Itoa(next), strconv.Itoa(r.start), strconv.Itoa(r.count))
		next += r.count
	}
	return args
}

// writeIDMaps maps the user to root in the user namespace of pid: with the
// subordinate ranges of /etc/subuid and /etc/subgid through the setuid
// newuidmap/newgidmap when the user has ranges and the tools exist,
// otherwise the user's own ids only, written directly (which the kernel
// allows an unprivileged process for its own ids, after denying setgroups).
func writeIDMaps(pid int) error {
	uid, gid := os.Getuid(), os.Getgid()
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	uidRanges, err := subIDRanges("/etc/subuid", name, uid)
	if err != nil {
		return err
	}
	gidRanges, err := subIDRanges("/etc/subgid", name, gid)
	if err != nil {
		return err
	}
	newuidmap, errU := exec.LookPath("newuidmap")
	newgidmap, errG := exec.LookPath("newgidmap")
	if len(uidRanges) > 0 && len(gidRanges) > 0 && errU == nil && errG == nil {
		p := strconv.Itoa(pid)
		if err := runIDMapTool(newuidmap, append([]string{p}, idMapArgs(uid, uidRanges)...)); err != nil {
			return err
		}
		return runIDMapTool(newgidmap, append([]string{p}, idMapArgs(gid, gidRanges)...))
	}
	dir := "/proc/" + strconv.Itoa(pid)
	if err := os.WriteFile(dir+"/uid_map", fmt.Appendf(nil, "0 %d 1\n", uid), 0); err != nil {
		return fmt.Errorf("write uid map: %w", err)
	}
	if err := os.WriteFile(dir+"/setgroups", []byte("deny"), 0); err != nil {
		return fmt.Errorf("deny setgroups: %w", err)
	}
	if err := os.WriteFile(dir+"/gid_map", fmt.Appendf(nil, "0 %d 1\n", gid), 0); err != nil {
		return fmt.Errorf("write gid map: %w", err)
	}
	return nil
}

func runIDMapTool(path string, args []string) error {
	var stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Stderr = &stderr
	cmd.Env = []string{}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("run %s %s: %w: %s", path, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// userNamespaceError explains why creating a user namespace failed, naming
// the knob that forbids it.
func userNamespaceError(err error) error {
	read := func(path string) string {
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	switch {
	case read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
		return fmt.Errorf("%w: sysctl kernel.unprivileged_userns_clone is 0 (set it to 1): %v", ErrUserNamespaceForbidden, err)
	case read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
		return fmt.Errorf("%w: sysctl kernel.apparmor_restrict_unprivileged_userns is 1 (set it to 0 or give ctnet an AppArmor profile with \"userns,\"): %v", ErrUserNamespaceForbidden, err)
	case errors.Is(err, syscall.ENOSPC) || read("/proc/sys/user/max_user_namespaces") == "0":
		return fmt.Errorf("%w: sysctl user.max_user_namespaces is %s (raise it): %v", ErrUserNamespaceForbidden, read("/proc/sys/user/max_user_namespaces"), err)
	}
	return fmt.Errorf("%w: %v", ErrUserNamespaceForbidden, err)
}
