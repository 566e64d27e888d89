#!/usr/bin/env bash
# Installs what ctnet's tests and demo need on a fresh Debian 12 machine (as root):
# the tools the tests check ctnet with, the unprivileged test user, and Go on PATH.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

# The runtimes (podman with runc, containerd) and the reference CNI plugins are the real
# users the CNI tests drive; busybox-static is their root filesystem, as no image is pulled.
packages=(iproute2 nftables iptables socat iperf3 iputils-ping curl python3 python3-scapy uidmap procps util-linux tcpdump
    podman runc containerd containernetworking-plugins busybox-static graphviz)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    # A daemon a package would start (containerd) would run in the machine's own network
    # namespace: the tests start their own, inside their sandboxes.
    policy=/usr/sbin/policy-rc.d
    had_policy=false; [ -e "$policy" ] && had_policy=true
    $had_policy || { printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    $had_policy || rm -f "$policy"
fi

# The unprivileged user the rootless tests run ctnet as, with subordinate ids.
id ctnettest >/dev/null 2>&1 || useradd --create-home --shell /bin/bash ctnettest
grep -q '^ctnettest:' /etc/subuid || echo 'ctnettest:400000:65536' >> /etc/subuid
grep -q '^ctnettest:' /etc/subgid || echo 'ctnettest:400000:65536' >> /etc/subgid

command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || {
    echo "Go 1.26 is needed: install it to /usr/local/go (https://go.dev/dl/)" >&2; exit 1; }

# The CRI client and the CNI reference runtime, at the versions the tests were written
# against; Debian 12 packages neither.
export PATH=/usr/local/go/bin:$PATH
tools=(sigs.k8s.io/cri-tools/cmd/crictl@v1.34.0 github.com/containernetworking/cni/cnitool@v1.3.1)
for tool in "${tools[@]}"; do
    bin=/usr/local/lib/ctnet-test/$(basename "${tool%@*}")-${tool#*@}
    [ -x "$bin" ] && continue
    dir=$(mktemp -d)
    GOBIN=$dir go install "$tool"
    mkdir -p /usr/local/lib/ctnet-test
    mv "$dir/$(basename "${tool%@*}")" "$bin"
    rmdir "$dir"
done
