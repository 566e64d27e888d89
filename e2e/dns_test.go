package e2e

import (
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// tcpQueryScript asks 127.0.0.11:53 over TCP for the A record of argv[1] and prints
// the address of the answer's last record.
const tcpQueryScript = `
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[1].split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
s = socket.create_connection(("127.0.0.11", 53), timeout=3)
s.sendall(struct.pack(">H", len(q)) + q)
n = struct.unpack(">H", s.recv(2))[0]
r = b""
while len(r) < n:
    r += s.recv(n - len(r))
print(socket.inet_ntoa(r[-4:]))
`

// Containers resolve each other by name through their embedded DNS server at
// 127.0.0.11, over UDP and TCP, as Docker's do on a user-defined network (the
// default network has none, as in Docker and Podman): the names, --network-alias
// names and NAME.NETWORK of the containers sharing a network, at once after they start and no longer once
// they are removed, never those of another network. Other names go to the --dns
// resolver, except from an internal network. A program in the container can still
// serve DNS on port 53 itself: the embedded server only borrows that port through a
// redirect inside the container's namespace.
func TestContainerDNS(t *testing.T) {
	e := newEnv(t)
	resolver := e.wan.ListenUDP(t, lab.WANIP+":53")
	go serveDNS(resolver, "svc.test.", "198.51.100.77")
	e.must("network", "create", "app")
	e.must("network", "create", "other")
	e.must("network", "create", "sealed", "--internal")
	e.runDetached("--name", "web", "--network", "app", "--network-alias", "www", "--network-alias", "API", "--", "sleep", "600")
	e.runDetached("--name", "client", "--network", "app", "--dns", lab.WANIP, "--", "sleep", "600")
	e.runDetached("--name", "stranger", "--network", "other", "--dns", lab.WANIP, "--", "sleep", "600")
	e.runDetached("--name", "inside", "--network", "sealed", "--", "sleep", "600")
	// Names must resolve to the addresses the containers hold, as the kernel says.
	addr := func(name string) string { return e.kernelAddr(name, "eth0") }
	lookup := func(from, name string) string {
		r := e.ctnet("exec", from, "--", "getent", "ahostsv4", name)
		if r.Code != 0 || r.Stdout == "" {
			return ""
		}
		return strings.Fields(r.Stdout)[0]
	}
	for _, c := range []struct{ from, name, want string }{
		{"client", "web", addr("web")},
		{"client", "web.app", addr("web")},
		{"client", "WEB", addr("web")},
		{"client", "client", addr("client")},
		{"client", "www", addr("web")},          // --network-alias
		{"client", "api.app", addr("web")},      // an alias given in capitals, with the network
		{"client", "svc.test", "198.51.100.77"}, // forwarded to the --dns resolver in the wan
		// The servers of stranger and inside answer what they should, so what they do
		// not answer below is withheld, not lost to a dead server.
		{"stranger", "stranger", addr("stranger")},
		{"stranger", "svc.test", "198.51.100.77"},
		{"inside", "inside.sealed", addr("inside")},
		{"stranger", "www", ""},
		{"stranger", "web", ""},    // another network's container
		{"inside", "svc.test", ""}, // an internal network has no way out
	} {
		if got := lookup(c.from, c.name); got != c.want {
			t.Errorf("%s resolving %s: got %q, want %q", c.from, c.name, got, c.want)
		}
	}
	// Over TCP too, as resolvers ask when a UDP answer is truncated.
	if r := e.ctnet("exec", "client", "--", "python3", "-c", tcpQueryScript, "web"); r.Code != 0 || strings.TrimSpace(r.Stdout) != addr("web") {
		t.Errorf("client resolving web over TCP: want %s, got %s", addr("web"), r)
	}
	if r := e.ctnet("exec", "client", "--", "cat", "/etc/resolv.conf"); !strings.Contains(r.Stdout, "nameserver 127.0.0.11\n") {
		t.Errorf("client's resolv.conf should name the embedded server: %s", r)
	}
	// The default network has no embedded DNS, as Docker's and Podman's.
	e.runDetached("--name", "plain", "--dns", lab.WANIP, "--", "sleep", "600")
	if r := e.ctnet("exec", "plain", "--", "cat", "/etc/resolv.conf"); strings.Contains(r.Stdout, "127.0.0.11") || !strings.Contains(r.Stdout, "nameserver "+lab.WANIP+"\n") {
		t.Errorf("a container on the default network should use its resolver directly: %s", r)
	}

	e.runDetached("--name", "late", "--network", "app", "--", "sleep", "600")
	if got, want := lookup("client", "late"), addr("late"); got != want {
		t.Errorf("a container started a moment ago: got %q, want %q", got, want)
	}
	e.must("rm", "-f", "late")
	if got := lookup("client", "late"); got != "" {
		t.Errorf("a removed container still resolves, to %s", got)
	}
	if got, want := lookup("client", "web"), addr("web"); got != want {
		t.Errorf("after late's removal, client resolving web: got %q, want %q", got, want)
	}

	// The container's own DNS server on port 53, beside the embedded one.
	e.runDetached("--name", "dnsd", "--network", "app", "--", "socat", "UDP-RECVFROM:53,fork", "SYSTEM:echo own-server")
	if !eventually(func() bool { return askPeerUDP(e.containerRun("client"), addr("dnsd"), 53) == "own-server" }) {
		t.Errorf("the container's own server on port 53 does not answer")
	}
	if got, want := lookup("dnsd", "web"), addr("web"); got != want {
		t.Errorf("with its own server on port 53, the container resolving web: got %q, want %q", got, want)
	}
	if out := e.output(append(lab.InNetNS(e.inspect("dnsd").NetNS), "nft", "list", "table", "ip", "ctnet")...); !strings.Contains(out, "ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:") {
		t.Errorf("the redirect of 127.0.0.11:53 inside the container:\n%s", out)
	}
	e.must("rm", "-f", "web", "client", "stranger", "inside", "dnsd", "plain")
	e.must("network", "rm", "app", "other", "sealed", "bridge")
}
