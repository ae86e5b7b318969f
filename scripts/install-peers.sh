#!/usr/bin/env bash
# install-peers.sh
#
# Installs the third-party peers the interop tests (test/interop/) run against,
# on Debian 12, when they are missing:
#   dpdk-testpmd  (package dpdk-dev, DPDK 22.11: vhost and virtio-user PMDs)
#   iperf3, tcpdump, ip (iproute2), ethtool, ping (iputils-ping): also what
#   scripts/capture-traffic.sh (npm test) needs
# Idempotent: does nothing when every command is already there. Runs
# `apt-get update` only when a package has no install candidate or the first
# install attempt fails. Needs root (or sudo) only when something is missing.
set -euo pipefail

log() { echo "install-peers: $*" >&2; }

need=()
for pair in dpdk-testpmd:dpdk-dev iperf3:iperf3 tcpdump:tcpdump ip:iproute2 ethtool:ethtool ping:iputils-ping; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -eq 0 ]; then
  log "all peers present"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    log "error: need root to install: ${need[*]}"; exit 1
  fi
fi
command -v apt-get >/dev/null 2>&1 || { log "error: no apt-get; install manually: ${need[*]}"; exit 1; }

export DEBIAN_FRONTEND=noninteractive
install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }

updated=0
for p in "${need[@]}"; do
  # No candidate version means stale or empty package lists.
  policy=$(apt-cache policy "$p" 2>/dev/null || true)
  if ! grep -q 'Candidate: [^(]' <<<"$policy"; then
    log "apt-get update (no candidate for $p)"
    "${SUDO[@]}" apt-get update -qq
    updated=1
    break
  fi
done

log "installing: ${need[*]}"
if ! install "${need[@]}"; then
  if [ $updated -eq 1 ]; then log "error: apt-get install failed"; exit 1; fi
  log "install failed; apt-get update and retry"
  "${SUDO[@]}" apt-get update -qq
  install "${need[@]}"
fi

for pair in dpdk-testpmd:dpdk-dev iperf3:iperf3 tcpdump:tcpdump ip:iproute2 ethtool:ethtool ping:iputils-ping; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || { log "error: ${pair%%:*} still missing after installing ${pair#*:}"; exit 1; }
done
log "done"
