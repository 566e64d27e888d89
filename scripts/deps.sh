#!/usr/bin/env bash
# Installs what ctnet's tests and demo need on a fresh Debian 12 machine (as root):
# the tools the tests check ctnet with, the unprivileged test user, and Go on PATH.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

packages=(iproute2 nftables iptables socat iperf3 iputils-ping curl python3 python3-scapy uidmap procps util-linux tcpdump)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The unprivileged user the rootless tests run ctnet as, with subordinate ids.
id ctnettest >/dev/null 2>&1 || useradd --create-home --shell /bin/bash ctnettest
grep -q '^ctnettest:' /etc/subuid || echo 'ctnettest:400000:65536' >> /etc/subuid
grep -q '^ctnettest:' /etc/subgid || echo 'ctnettest:400000:65536' >> /etc/subgid

command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || {
    echo "Go 1.26 is needed: install it to /usr/local/go (https://go.dev/dl/)" >&2; exit 1; }
