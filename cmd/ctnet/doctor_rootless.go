package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/usernetproc"
	"github.com/ctnet/ctnet/network"
)

// Files an administrator adds so that unprivileged users' containers work after
// every boot; the README's setup shows the same.
const (
	tunUdevRule   = `echo 'KERNEL=="tun", MODE="0666"' > /etc/udev/rules.d/60-ctnet-tun.rules`
	tunTmpfiles   = `echo 'z /dev/net/tun 0666 root root -' > /etc/tmpfiles.d/ctnet-tun.conf`
	pingSysctlNow = `sysctl -w net.ipv4.ping_group_range="0 2147483647"`
	pingSysctlD   = `echo 'net.ipv4.ping_group_range = 0 2147483647' > /etc/sysctl.d/60-ctnet-ping.conf`
)

// rootlessFindings checks what an unprivileged user's containers need of the host:
// user namespaces, /dev/net/tun for tap0, and ICMP sockets for ping. Run by root, it
// checks for unprivileged users in general; run by a user, for that user.
func rootlessFindings() []network.Finding {
	var out []network.Finding
	ok := func(format string, args ...any) {
		out = append(out, network.Finding{Text: fmt.Sprintf(format, args...)})
	}
	bad := func(fix, format string, args ...any) {
		out = append(out, network.Finding{Problem: true, Text: fmt.Sprintf(format, args...), Fix: fix})
	}
	asRoot := os.Geteuid() == 0

	switch n, err := readSysctlInt("user/max_user_namespaces"); {
	case err == nil && n == 0:
		bad(`sysctl -w user.max_user_namespaces=15000, and the same line in /etc/sysctl.d/60-ctnet-userns.conf`,
			"user.max_user_namespaces is 0: no user namespaces, which every unprivileged container is in")
	case err == nil:
		ok("user namespaces: user.max_user_namespaces is %d", n)
	}
	if n, err := readSysctlInt("kernel/unprivileged_userns_clone"); err == nil && n == 0 {
		bad(`sysctl -w kernel.unprivileged_userns_clone=1, and the same line in /etc/sysctl.d/60-ctnet-userns.conf`,
			"kernel.unprivileged_userns_clone is 0: unprivileged users cannot make user namespaces")
	}
	if n, err := readSysctlInt("kernel/apparmor_restrict_unprivileged_userns"); err == nil && n == 1 {
		bad(`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, and the same line in /etc/sysctl.d/60-ctnet-userns.conf (or an AppArmor profile for ctnet with "userns,")`,
			"kernel.apparmor_restrict_unprivileged_userns is 1: AppArmor keeps unprivileged users' namespaces from their capabilities")
	}

	tunFix := "chmod 0666 /dev/net/tun now; for every boot, a udev rule: " + tunUdevRule + " (or, without udev: " + tunTmpfiles + ")"
	if asRoot {
		var st unix.Stat_t
		switch err := unix.Stat("/dev/net/tun", &st); {
		case err != nil:
			bad("modprobe tun (and tun in /etc/modules-load.d/tun.conf)", "/dev/net/tun: %v", err)
		case st.Mode&0o006 != 0o006:
			bad(tunFix, "/dev/net/tun is %04o: unprivileged users cannot open it to make their containers' tap0", st.Mode&0o7777)
		default:
			ok("/dev/net/tun is %04o: unprivileged users can open it", st.Mode&0o7777)
		}
	} else {
		switch fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0); {
		case err == unix.EACCES || err == unix.EPERM:
			bad(tunFix+" (as root)", "/dev/net/tun: %v: you cannot open it to make your containers' tap0", err)
		case err != nil:
			bad("modprobe tun (as root; and tun in /etc/modules-load.d/tun.conf)", "/dev/net/tun: %v", err)
		default:
			unix.Close(fd)
			ok("/dev/net/tun: you can open it")
		}
	}

	pingFix := pingSysctlNow + " now; for every boot: " + pingSysctlD
	if !asRoot {
		pingFix += " (as root)"
	}
	low, high, err := pingGroupRange()
	switch {
	case err != nil:
		bad(pingFix, "net.ipv4.ping_group_range: %v", err)
	case asRoot && low > high:
		bad(pingFix, "net.ipv4.ping_group_range is \"%d %d\": no group may ping, so ping fails in unprivileged containers", low, high)
	case asRoot:
		ok("net.ipv4.ping_group_range is \"%d %d\": users in those groups can ping from their containers", low, high)
	default:
		groups, _ := unix.Getgroups()
		groups = append(groups, os.Getegid())
		allowed := false
		for _, g := range groups {
			allowed = allowed || (int64(g) >= low && int64(g) <= high)
		}
		if allowed {
			ok("net.ipv4.ping_group_range is \"%d %d\": your groups may ping", low, high)
		} else {
			bad(pingFix, "net.ipv4.ping_group_range is \"%d %d\": none of your groups (%v) may ping, so ping fails in your containers", low, high, groups)
		}
	}
	return append(out, userNetHelperFinding())
}

// userNetHelperFinding says whether ctnet-usernet, the process of every user-mode
// network, is beside ctnet, where ctnet starts it from.
func userNetHelperFinding() network.Finding {
	path, err := usernetproc.Helper()
	if err != nil {
		return network.Finding{Problem: true, Text: err.Error(),
			Fix: "build both into one directory, as the README does: CGO_ENABLED=0 go build -o DIR/ ./cmd/ctnet ./cmd/" + usernetproc.HelperName}
	}
	return network.Finding{Text: "the user-mode network's helper is beside ctnet: " + path}
}

func readSysctlInt(name string) (int64, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// pingGroupRange is net.ipv4.ping_group_range of the network namespace ctnet runs
// in, where an unprivileged container's pings leave from.
func pingGroupRange() (low, high int64, err error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		return 0, 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0, 0, fmt.Errorf("unreadable value %q", b)
	}
	if low, err = strconv.ParseInt(fields[0], 10, 64); err == nil {
		high, err = strconv.ParseInt(fields[1], 10, 64)
	}
	return low, high, err
}
