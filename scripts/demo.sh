#!/usr/bin/env bash
# The reference article's scenario, done by ctnet, on a fresh Debian 12 machine (as root).
#
# It installs what it needs, builds ctnet, and runs everything inside a throwaway "host"
# network namespace with a "wan" namespace behind it (203.0.113.0/24), so the machine's
# own network is never touched. Every ctnet command is printed before it runs. At the
# end everything is removed again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
./scripts/deps.sh

bin=$(mktemp -d /tmp/ctnet-demo.XXXXXX)
root=$bin/root
host=ctdemo-host-$$
wan=ctdemo-wan-$$
CGO_ENABLED=0 go build -ldflags "-X main.buildVersion=$(git describe --always --dirty)" -o "$bin/" ./cmd/ctnet ./cmd/ctnet-usernet

cleanup() {
    set +e
    H "$bin/ctnet" --root "$root" rm -f web client >/dev/null 2>&1
    H "$bin/ctnet" --root "$root" network rm demo >/dev/null 2>&1
    [ -n "${wan_server:-}" ] && kill "$wan_server" 2>/dev/null
    ip netns del "$host" 2>/dev/null
    ip netns del "$wan" 2>/dev/null
    rm -rf "$bin"
}
trap cleanup EXIT

H() { nsenter --net=/run/netns/$host "$@"; }
W() { nsenter --net=/run/netns/$wan "$@"; }
step() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
ctnet() { printf '$ ctnet %s\n' "$*"; H "$bin/ctnet" --root "$root" "$@"; }

step "A sandbox host with an uplink to a 'wan' namespace (stand-ins for a server and the internet)"
ip netns add "$host"
ip netns add "$wan"
ip link add uplink0 netns "$host" type veth peer name wan0 netns "$wan"
H ip addr add 203.0.113.1/24 dev uplink0
W ip addr add 203.0.113.2/24 dev wan0
H ip link set lo up; H ip link set uplink0 up; W ip link set lo up; W ip link set wan0 up
H ip route add default via 203.0.113.2

step "A network: a bridge holding the gateway, IPAM, masquerade, isolation (the article's br0 + iptables)"
ctnet network create demo --subnet 172.18.0.0/16
ctnet network ls

step "Two containers: namespace, veth pair into the bridge, address, default route (the article's netns0/netns1)"
ctnet run -d --name web --network demo -p 8080:8000 -- socat TCP-LISTEN:8000,fork,reuseaddr 'SYSTEM:echo hello from web - you are $SOCAT_PEERADDR'
ctnet run -d --name client --network demo -- sleep 600
ctnet ps

step "They reach each other and the gateway; the host reaches them"
ctnet exec client -- ping -c1 -W1 172.18.0.2
ctnet exec client -- ping -c1 -W1 172.18.0.1
H ping -c1 -W1 172.18.0.3 | tail -2

step "The way out: masquerade behind the host's address (the article's MASQUERADE rule)"
# nsenter itself, not the W function: $! must be the server's PID (nsenter execs
# socat), not a subshell's whose socat would outlive the kill.
nsenter --net=/run/netns/$wan socat TCP-LISTEN:9000,fork,reuseaddr 'SYSTEM:echo the wan sees you as $SOCAT_PEERADDR' &
wan_server=$!
sleep 0.3
ctnet exec client -- socat -T2 - TCP:203.0.113.2:9000

step "The way in: the published port, from the wan (the article's DNAT), the host and another container"
sleep 0.5
echo "from the wan:    $(W socat -T2 - TCP:203.0.113.1:8080)"
echo "from the host:   $(H socat -T2 - TCP:127.0.0.1:8080)"
echo "from client:     $(H "$bin/ctnet" --root "$root" exec client -- socat -T2 - TCP:203.0.113.1:8080)"

step "Name files of its own, and the network's names from its embedded DNS server at 127.0.0.11, as Docker gives a container"
ctnet exec client -- sh -c 'echo "hostname: $(cat /etc/hostname)"; grep ^nameserver /etc/resolv.conf; tail -n 1 /etc/hosts; getent hosts web'

step "What ctnet made, as the article's inspect-net-stack.sh shows it"
ctnet inspect web
H nft list table inet ctnet | sed -n 1,40p  # sed reads to the end: head would SIGPIPE nft under pipefail

step "Everything undone"
ctnet rm -f web client
ctnet network rm demo
echo "links left on the host: $(H ip -o link | awk -F': ' '{print $2}' | tr '\n' ' ')"
echo "nftables left: '$(H nft list ruleset)'"
