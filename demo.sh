#!/usr/bin/env bash
# The RVS demo, in one command, as root: builds rvsd and rvs-lab (release), then runs
# `rvs-lab demo`: NAT/DR/TUN balancing and the path-MTU scenario (with and without the
# director's ICMP forwarding) in network-namespace labs, and prints a short report.
# Installs the Debian packages it uses when they are missing. Leaves nothing behind: the labs
# remove their namespaces (and with them rvsd's nftables tables and TAP devices), and the
# script checks that. Exit status: 0 if every check passed, non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh must run as root (it creates network namespaces, veth links and nftables" >&2
    echo "tables, all inside namespaces it removes again): sudo ./demo.sh" >&2
    exit 1
fi

# What the demo runs: ip (iproute2), sysctl and kill (procps), nft (nftables, used by rvsd),
# modprobe (kmod, through which the kernel loads its tunnel modules where it has them).
PACKAGES=(iproute2 procps nftables kmod)
missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "demo.sh: cargo is not in root's PATH; with a user's rustup install run:" >&2
    echo "  sudo env \"PATH=\$PATH\" ./demo.sh" >&2
    exit 1
fi

echo "== cargo build --release --locked -p rvsd -p rvs-lab"
cargo build --release --locked -p rvsd -p rvs-lab
BIN="${CARGO_TARGET_DIR:-target}/release"

# Remove what a crashed run may have left (namespaces of processes that no longer exist),
# before and after.
sweep() { "$BIN/rvs-lab" sweep >/dev/null 2>&1 || true; }
trap sweep EXIT
sweep

echo "== $BIN/rvs-lab demo --rvsd $BIN/rvsd"
status=0
"$BIN/rvs-lab" demo --rvsd "$BIN/rvsd" &
demo_pid=$!
wait "$demo_pid" || status=$?

left=$(ip netns list | awk '{print $1}' | grep "^rvs-${demo_pid}-" || true)
if [ -n "$left" ]; then
    echo "demo.sh: namespaces left behind by the demo:" $left >&2
    [ "$status" -ne 0 ] || status=1
else
    echo "== ip netns list: nothing of the demo is left"
fi
exit "$status"
