package e2e

import (
	"strings"
	"testing"
)

// Bad input gets one clear line saying what to fix, a non-zero exit, and changes
// neither the store nor the kernel.
func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.runDetached("--name", "existing", "--ip", "172.17.0.2", "--", "sleep", "600")
	e.must("network", "create", "other", "--subnet", "10.77.0.0/24")
	storeBefore := e.must("ps", "-a", "--format", "json") + e.must("network", "ls", "--format", "json")
	kernelBefore := e.host.Snapshot(t, e.root)
	cases := []struct {
		args []string
		want string // part of the message that tells what to fix
	}{
		{[]string{"network", "create", "bad name!"}, "use letters, digits"},
		{[]string{"network", "create", "../etc"}, "use letters, digits"},
		{[]string{"network", "create", strings.Repeat("n", 65)}, "at most 64"},
		{[]string{"network", "create", "host"}, "reserved"},
		{[]string{"network", "create", "x", "--subnet", "10.0.0.0/33"}, "CIDR"},
		{[]string{"network", "create", "x", "--subnet", "10.1.2.3/24"}, "did you mean 10.1.2.0/24"},
		{[]string{"network", "create", "x", "--subnet", "10.1.2.0/31"}, "/30 or shorter"},
		{[]string{"network", "create", "x", "--subnet", "fd00::/64"}, "needs --ipv6"},
		{[]string{"network", "create", "x", "--ipv6", "--subnet", "fe80::/64"}, "link-local"},
		{[]string{"network", "create", "x", "--ipv4=false"}, "add --ipv6"},
		{[]string{"network", "create", "x", "--ipv6", "--mtu", "1200"}, "at least 1280"},
		{[]string{"network", "create", "x", "--subnet", "10.3.0.0/24", "--gateway", "10.4.0.1"}, "outside the subnet"},
		{[]string{"network", "create", "x", "--subnet", "10.3.0.0/24", "--gateway", "10.3.0.255"}, "broadcast"},
		{[]string{"network", "create", "x", "--gateway", "10.3.0.1"}, "needs --subnet"},
		{[]string{"network", "create", "x", "--bridge", "averyveryverylongname"}, "at most 15"},
		{[]string{"network", "create", "x", "--bridge", "a/b"}, "use letters, digits"},
		{[]string{"network", "create", "x", "--mtu", "10"}, "68 to 65535"},
		{[]string{"network", "create", "x", "--label", "novalue"}, "key=value"},
		{[]string{"network", "create", "x", "--opt", "masquerade=maybe"}, "true or false"},
		{[]string{"network", "create", "x", "--opt", "icc=maybe"}, "true or false"},
		{[]string{"network", "create", "x", "--subnet", "172.17.5.0/24"}, "overlaps 172.17.0.0/16 of network bridge"},
		{[]string{"network", "create", "bridge"}, "already exists"},
		{[]string{"run", "--network", "nosuch", "--", "true"}, "no network called nosuch"},
		{[]string{"run", "--network", "container:nosuch", "--", "true"}, "no container called nosuch"},
		{[]string{"run", "--ip", "10.9.9.9", "--", "true"}, "outside the subnet"},
		{[]string{"run", "--ip", "172.17.0.1", "--", "true"}, "gateway"},
		{[]string{"run", "--ip", "172.17.0.2", "--", "true"}, "already used by container existing"},
		{[]string{"run", "--ip", "not-an-ip", "--", "true"}, "IPv4 address"},
		{[]string{"run", "-p", "99999:80", "--", "true"}, "from 1 to 65535"},
		{[]string{"run", "-p", "80/icmp", "--", "true"}, "tcp, udp or sctp"},
		{[]string{"run", "-p", "8080-8090:80-81", "--", "true"}, "differ in length"},
		{[]string{"run", "-p", "[::1]:80:80", "--", "true"}, "IPv6"},
		{[]string{"run", "-p", "10.9.9.9:8080:80", "--", "true"}, "not an address of this host"},
		{[]string{"run", "--name", "bad/name", "--", "true"}, "use letters, digits"},
		{[]string{"run", "--name", "existing", "--", "true"}, "already used by container"},
		{[]string{"run", "--hostname", "-bad-", "--", "true"}, "labels of letters"},
		{[]string{"run", "--network", "host", "-p", "80:80", "--", "true"}, "no effect"},
		{[]string{"run", "--dns", "192.0.2.53:53", "--", "true"}, "without a port"},
		{[]string{"run", "--add-host", "db.internal=192.0.2.5", "--", "true"}, "want NAME:IP"},
		{[]string{"run", "--network", "host", "--dns", "192.0.2.53", "--", "true"}, "the host's files"},
		{[]string{"run", "--network", "none", "--ip", "172.17.0.9", "--", "true"}, "needs a network"},
		{[]string{"run", "--network", "other", "--network-alias", "bad_alias!", "--", "true"}, "bad --network-alias"},
		{[]string{"run", "--network-alias", "www", "--", "true"}, "no embedded DNS server"},
		{[]string{"run", "--network", "host", "--network-alias", "www", "--", "true"}, "no effect"},
		{[]string{"attach", "--netns", "/nonexistent", "--name", "x"}, "--netns"},
		{[]string{"attach", "--netns", e.host.Path, "--name", "x"}, "host's own namespace"},
		{[]string{"attach", "--name", "x"}, "needs --netns"},
		{[]string{"attach", "--netns", "/nonexistent", "--name", "x", "--ifname", "averyveryverylongname"}, "at most 15"},
		{[]string{"attach", "--netns", "/nonexistent", "--name", "x", "--ifname", "lo"}, "loopback"},
		{[]string{"attach", "--netns", "/nonexistent", "--name", "x", "--network", "none", "--ifname", "net1"}, "no effect"},
		{[]string{"network", "connect", "other", "existing", "--ifname", "eth0"}, "already has an interface called eth0"},
		{[]string{"network", "connect", "other", "existing", "--ifname", "lo"}, "loopback"},
		{[]string{"rm", "nosuch"}, "no container called nosuch"},
		{[]string{"network", "rm", "nosuch"}, "no network called nosuch"},
		{[]string{"network", "rm", "bridge"}, "use --force"},
		{[]string{"network", "connect", "nosuch", "existing"}, "no network called nosuch"},
		{[]string{"network", "connect", "bridge", "existing"}, "already connected"},
		{[]string{"exec", "nosuch", "--", "true"}, "no container called nosuch"},
		{[]string{"rm", "existing"}, "stop it first"},
		{[]string{"ps", "--format", "{{.Nope}}"}, "can't evaluate field Nope"},
		{[]string{"stop", "-t", "-1", "existing"}, "0 or more"},
	}
	for _, c := range cases {
		r := e.ctnet(c.args...)
		// A mistake in calling the command ends, as Docker's do, with where to read more.
		msg, _, _ := strings.Cut(strings.TrimSpace(r.Stderr), "\nSee 'ctnet ")
		switch {
		case r.Code == 0:
			t.Errorf("ctnet %v succeeded, want a refusal", c.args)
		case strings.Count(msg, "\n") > 0 || !strings.HasPrefix(msg, "ctnet: "):
			t.Errorf("ctnet %v: want one line starting with \"ctnet: \", got %q", c.args, msg)
		case !strings.Contains(msg, c.want):
			t.Errorf("ctnet %v: message %q does not say %q", c.args, msg, c.want)
		}
	}
	if after := e.must("ps", "-a", "--format", "json") + e.must("network", "ls", "--format", "json"); after != storeBefore {
		t.Errorf("refused commands changed the store:\n--- before\n%s\n--- after\n%s", storeBefore, after)
	}
	if diff := kernelBefore.Diff(e.host.Snapshot(t, e.root)); diff != "" {
		t.Errorf("refused commands changed the kernel:\n%s", diff)
	}
	e.must("rm", "-f", "existing")
	e.must("network", "rm", "bridge", "other")
}
