#!/usr/bin/env bash
# capture-traffic.sh OUT.pcap [SECONDS]
#
# Records a small, real-looking Ethernet capture (classic pcap, linktype 1) for
# virtio-mq tests and benchmarks:
#   * two private network namespaces (names contain $$) joined by a veth pair,
#     addressed 198.18.0.1/24 + fd00:5e:18::1/64 (server) and .2 / ::2 (client);
#     no traffic ever leaves them,
#   * offloads (TSO/GSO/GRO, checksum, SG) off on both veth ends so every frame is
#     a wire-like frame of at most 1514 bytes with real checksums,
#   * tcpdump -s 0 on the client's veth end while the client runs
#       iperf3 TCP -P 8 for SECONDS (default 3) at 5 Mbit/s per stream,
#       iperf3 UDP -b 50M for 1 s,
#       ping -c 5 (IPv4) and ping -c 3 (IPv6),
#   * at most 200000 packets (tcpdump -c), i.e. a few tens of MB.
# Needs root and iperf3, tcpdump, iproute2, ethtool, iputils-ping (it installs
# nothing: scripts/install-peers.sh or .ci/run does). Everything it started, and both namespaces, are
# removed on exit whatever happens. Prints one summary line on stdout.
set -euo pipefail

usage() { echo "usage: $0 OUT.pcap [SECONDS]" >&2; exit 2; }
log() { echo "capture-traffic: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || usage
OUT=$1
SECS=${2:-3}
[[ $SECS =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive integer (got '$SECS')"
(( SECS <= 60 )) || die "SECONDS must be at most 60 (keeps the capture small)"
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, tcpdump)"

OUT_DIR=$(dirname -- "$OUT")
[[ -d $OUT_DIR ]] || die "directory of $OUT does not exist"
OUT=$(cd -- "$OUT_DIR" && pwd)/$(basename -- "$OUT")

# ---- packages ---------------------------------------------------------------
# Installs nothing (it runs from `npm test`): .ci/run, or scripts/install-peers.sh
# run on purpose, installs these. Missing ones end the script with one line.
declare -A PKG_OF=([ip]=iproute2 [ss]=iproute2 [iperf3]=iperf3 [tcpdump]=tcpdump
                   [ethtool]=ethtool [ping]=iputils-ping)
missing=()
for cmd in "${!PKG_OF[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_OF[$cmd]}")
done
if (( ${#missing[@]} > 0 )); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  die "missing ${missing[*]}: install with scripts/install-peers.sh (or apt-get install ${missing[*]})"
fi

# ---- namespaces, cleanup ----------------------------------------------------
NS_S=vmqcap-s-$$          # server side (iperf3 -s)
NS_C=vmqcap-c-$$          # client side (tcpdump, iperf3 -c, ping)
VETH_S=vmqs$$             # <= 15 chars for any pid (pid_max <= 4194304)
VETH_C=vmqc$$
# shellcheck disable=SC2034  # IP_C / IP6_C are read indirectly below
IP_S=198.18.0.1 IP_C=198.18.0.2
# shellcheck disable=SC2034
IP6_S=fd00:5e:18::1 IP6_C=fd00:5e:18::2
WORK=$(mktemp -d /tmp/vmqcap.XXXXXX)
TCPDUMP_PID=
IPERF_PID=

cleanup() {
  local rc=$?
  set +e
  [[ -n $TCPDUMP_PID ]] && kill -INT "$TCPDUMP_PID" 2>/dev/null && wait "$TCPDUMP_PID" 2>/dev/null
  [[ -n $IPERF_PID ]] && kill "$IPERF_PID" 2>/dev/null && wait "$IPERF_PID" 2>/dev/null
  local ns pid
  for ns in "$NS_C" "$NS_S"; do
    if ip netns list 2>/dev/null | grep -qw -- "$ns"; then
      # only processes inside our own namespaces
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
      ip netns del "$ns" 2>/dev/null
    fi
  done
  ip link del "$VETH_C" 2>/dev/null   # normally already gone with its namespace
  rm -rf -- "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

in_s() { ip netns exec "$NS_S" "$@"; }
in_c() { ip netns exec "$NS_C" "$@"; }

ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add "$VETH_S" type veth peer name "$VETH_C"
ip link set "$VETH_S" netns "$NS_S"
ip link set "$VETH_C" netns "$NS_C"
for side in S C; do
  ns_var=NS_$side dev_var=VETH_$side ip_var=IP_$side ip6_var=IP6_$side
  ns=${!ns_var} dev=${!dev_var}
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "$dev" mtu 1500 up
  ip -n "$ns" addr add "${!ip_var}/24" dev "$dev"
  ip -n "$ns" addr add "${!ip6_var}/64" dev "$dev" nodad
  # wire-like frames: no segmentation/aggregation offloads, software checksums
  ip netns exec "$ns" ethtool -K "$dev" tx off sg off tso off gso off gro off >/dev/null 2>&1 ||
    ip netns exec "$ns" ethtool -K "$dev" tso off gso off gro off >/dev/null 2>&1 ||
    log "warning: could not change offloads on $dev"
done

# ---- capture ------------------------------------------------------------------
# --immediate-mode: no 1 s buffer timeout, so nothing is still in the kernel ring
# when tcpdump is stopped. Background jobs are started with `ip netns exec`
# directly (it execs), so $! is tcpdump / iperf3 itself and signals reach it.
: >"$OUT"
ip netns exec "$NS_C" tcpdump -i "$VETH_C" -s 0 -c 200000 -U --immediate-mode -n -Z root -w "$OUT" 2>"$WORK/tcpdump.err" &
TCPDUMP_PID=$!
for _ in $(seq 100); do
  grep -q 'listening on' "$WORK/tcpdump.err" 2>/dev/null && break
  kill -0 "$TCPDUMP_PID" 2>/dev/null || { cat "$WORK/tcpdump.err" >&2; die "tcpdump failed to start"; }
  sleep 0.05
done
grep -q 'listening on' "$WORK/tcpdump.err" || die "tcpdump did not start listening"

ip netns exec "$NS_S" iperf3 -s -B "$IP_S" >"$WORK/iperf3-server.log" 2>&1 &
IPERF_PID=$!
for _ in $(seq 100); do
  in_s ss -Hltn "sport = :5201" 2>/dev/null | grep -q . && break
  sleep 0.05
done

# iperf3 -c with a few retries (the server serves one test at a time). Run as a
# background job + wait so that INT/TERM interrupt us at once (bash runs traps
# only after a foreground command ends).
client() {
  local _i pid
  for _i in 1 2 3 4 5; do
    ip netns exec "$NS_C" iperf3 -c "$IP_S" "$@" >>"$WORK/iperf3-client.log" 2>&1 &
    pid=$!
    if wait "$pid"; then return 0; fi
    sleep 0.3
  done
  cat "$WORK/iperf3-client.log" >&2
  die "iperf3 client $* failed"
}

client -P 8 -t "$SECS" -b 5M   # 8 TCP streams, 40 Mbit/s in all
client -u -b 50M -l 1400 -t 1        # UDP, ~6 MB
in_c ping -n -q -c 5 -i 0.2 "$IP_S" >/dev/null || die "ping $IP_S failed"
in_c ping -6 -n -q -c 3 -i 0.2 "$IP6_S" >/dev/null || die "ping $IP6_S failed"

sleep 0.2                            # let the last replies reach tcpdump
kill -INT "$TCPDUMP_PID" 2>/dev/null || true
wait "$TCPDUMP_PID" 2>/dev/null || true
TCPDUMP_PID=

captured=$(sed -n 's/^\([0-9][0-9]*\) packets\{0,1\} captured.*/\1/p' "$WORK/tcpdump.err" | head -n1)
dropped=$(sed -n 's/^\([0-9][0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' "$WORK/tcpdump.err" | head -n1)
bytes=$(stat -c %s -- "$OUT")
echo "capture-traffic: ${captured:-?} packets captured (${dropped:-0} dropped by kernel), $bytes bytes -> $OUT"
