#!/usr/bin/env bash
# qemu-guest.sh [DIR]
#
# Prepares a tiny Linux guest for running a real virtio-net driver against
# `virtio-mq serve` under QEMU (see test/interop/serve-qemu.test.ts and the
# README), on Debian 12:
#
#   1. installs what is missing, with apt-get only when missing:
#        qemu-system-x86_64  (qemu-system-x86)
#        a kernel + modules  (linux-image-amd64; any /boot/vmlinuz-V with
#                             /lib/modules/V/modules.dep will do)
#        busybox             (busybox-static; a dynamic /bin/busybox also works)
#        ethtool             (optional: `ethtool -L` and per-queue counters)
#   2. builds an initramfs in DIR (default /var/cache/virtio-mq/guest): busybox,
#      the virtio-pci/virtio-net modules with their dependencies (modules.dep;
#      built-in ones skipped), ethtool with its shared libraries, and /init.
#      Rebuilt only when an input changed (kernel, busybox, ethtool, this script):
#      the initramfs is named by a hash of those inputs, so worktrees with
#      different versions of this script each keep their own image (images
#      unused for a week are removed).
#   3. prints the paths on stdout, shell-style:
#        KERNEL=DIR/vmlinuz-V
#        INITRD=DIR/initramfs-V-HASH.cpio.gz
#
# The guest's /init loads the modules, brings eth0 up and pings a peer, printing
# markers on the console (ttyS0):
#   GUEST-BOOT ...            kernel version and CPUs
#   GUEST-FEATURES 0101...    the device's negotiated feature bits as the driver sees them
#                             (/sys/class/net/eth0/device/features, one 0/1 per bit from bit 0)
#   GUEST-QUEUES rx=N tx=N    queue directories under /sys/class/net/eth0/queues
#   GUEST-READY               eth0 is up with its address
#   GUEST-PING cpu=C ...      one ping run per CPU (pinned, so XPS spreads them over TX queues)
#   GUEST-STAT name=value     ethtool -S per-queue packet counters
#   GUEST-CHANNELS-SET combined=N ok|failed current=C rx=R tx=T
#   GUEST-QPING combined=N txq=Q rc=R ...
#   GUEST-QSTAT combined=N at=before|after name=value
#                             with vmq_channels only (see below)
#   GUEST-OFFLOAD name=on|off  ethtool -k eth0 checksum/segmentation lines (vmq_offloads=1)
#   GUEST-IPERF dir=tx|rx streams=P rc=R [ID] ... receiver
#                             iperf3 -P P receiver lines per stream (and SUM) (vmq_iperf=SECONDS)
#   GUEST-LIPERF phase=... / dir=rx rc=R ...  iperf3 -R -P 4 while `ethtool -L` changes
#                             the channel count (vmq_iperf_channels=SECONDS,N,M)
#   GUEST-MIG-LISTEN / GUEST-MIG-RX sha256=H / GUEST-MIG-TX-END / GUEST-MIG-END
#                             vmq_mig=PATTERN: receive a stream on port 5001 (sha256 of it at
#                             EOF), send `yes PATTERN` to PEER:5002 until the peer closes
#                             (the live-migration test, test/interop/serve-migrate.test.ts)
#   GUEST-PING-OK | GUEST-PING-FAIL
#   GUEST-DONE                then `poweroff -f`
# (GUEST-FAIL reason: when eth0 never appears.) It is configured from the kernel
# command line (unknown key=value parameters become init's environment):
#   vmq_ip=192.0.2.2/24   guest address on eth0
#   vmq_peer=192.0.2.1    address to ping
#   vmq_queues=N          `ethtool -L eth0 combined N` first (needs ethtool; default: leave
#                         the driver's default, min(max pairs, online CPUs))
#   vmq_count=3           echo requests per CPU
#   vmq_ping_size=56      ICMP payload bytes of those pings (GUEST-IPFRAG: the guest's
#                         ReasmReqds and FragCreates counters after them)
#   vmq_offloads=1        print the offloads ethtool -k shows
#   vmq_iperf=S           iperf3 -c PEER -P 4 -t S, then with -R (iperf3 server at the peer)
#   vmq_iperf_streams=1,4 the -P values vmq_iperf runs, in turn (default 4)
#   vmq_iperf_channels=S,N,M  iperf3 -R -P 4 -t S; after S/3 s `ethtool -L combined N`, after 2S/3 s `M`
#   vmq_channels="2 4"    after the pings above, for each N in turn: `ethtool -L eth0 combined N`,
#                         then one ping run per TX queue Q < N with XPS steering every CPU
#                         to Q alone, with ethtool -S per-queue counters before and after
#                         (a comma works as the separator too: vmq_channels=2,4)
#
# Logs go to stderr; only the two lines above go to stdout.
set -euo pipefail

log() { echo "qemu-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

DIR=${1:-/var/cache/virtio-mq/guest}

# ---------------------------------------------------------------- packages --
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi
updated=0
apt_install() {
  # apt_install PKG...: install with apt-get, `apt-get update` once when needed.
  # Tests set VMQ_NO_INSTALL=1: they use what .ci/run installed and never install themselves.
  [ -z "${VMQ_NO_INSTALL:-}" ] || { log "could not install (VMQ_NO_INSTALL is set): $*"; return 1; }
  command -v apt-get >/dev/null 2>&1 || { log "no apt-get; install manually: $*"; return 1; }
  if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then log "need root to install: $*"; return 1; fi
  local p policy
  if [ $updated -eq 0 ]; then
    for p in "$@"; do
      policy=$(apt-cache policy "$p" 2>/dev/null || true)
      if ! grep -q 'Candidate: [^(]' <<<"$policy"; then
        log "apt-get update (no candidate for $p)"
        "${SUDO[@]}" apt-get update -qq >&2 || return 1
        updated=1
        break
      fi
    done
  fi
  log "installing: $*"
  # INITRD=No: the kernel's postinst hook skips building an initramfs for the
  # host (/boot/initrd.img-V, ~30 MB and half a minute); the guest uses ours.
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive INITRD=No apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
    [ $updated -eq 1 ] && return 1
    log "install failed; apt-get update and retry"
    "${SUDO[@]}" apt-get update -qq >&2 || return 1
    updated=1
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive INITRD=No apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || return 1
  fi
}

# Newest kernel version V with both /boot/vmlinuz-V and /lib/modules/V/modules.dep.
find_kernel() {
  local v best=
  for f in /boot/vmlinuz-*; do
    [ -e "$f" ] || continue
    v=${f#/boot/vmlinuz-}
    [ -f "/lib/modules/$v/modules.dep" ] || continue
    if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$v" | sort -V | tail -n1)" = "$v" ]; then best=$v; fi
  done
  echo "$best"
}

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[ -n "$(find_kernel)" ] || need+=(linux-image-amd64)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}" || die "could not install: ${need[*]}"
fi
if ! command -v ethtool >/dev/null 2>&1; then
  apt_install ethtool || log "ethtool not installed; the guest runs without it (no ethtool -L / -S)"
fi

command -v qemu-system-x86_64 >/dev/null 2>&1 || die "qemu-system-x86_64 still missing"
KVER=$(find_kernel)
[ -n "$KVER" ] || die "no kernel with modules found (/boot/vmlinuz-V + /lib/modules/V)"
[ -x /bin/busybox ] || die "/bin/busybox still missing"
ETHTOOL=$(command -v ethtool || true)
IPERF3=$(command -v iperf3 || true)
MODDIR=/lib/modules/$KVER

# ----------------------------------------------------------------- modules --
# Resolve modules (by name) to files in load order, dependencies first.
declare -A DEP=() SEEN=()
while IFS= read -r line; do
  DEP[${line%%:*}]=${line#*:}
done <"$MODDIR/modules.dep"
declare -A BYNAME=()
for path in "${!DEP[@]}"; do
  base=${path##*/}; base=${base%%.ko*}
  BYNAME[$base]=$path
  BYNAME[${base//-/_}]=$path
done
ORDER=()
add_module() {
  local path=$1 d
  [ -n "${SEEN[$path]:-}" ] && return 0
  SEEN[$path]=1
  for d in ${DEP[$path]}; do add_module "$d"; done
  ORDER+=("$path")
}
for name in virtio virtio_ring virtio_pci virtio_net; do
  if grep -qE "/${name}\.ko(\..*)?$" "$MODDIR/modules.builtin" 2>/dev/null; then
    log "$name is built into $KVER"
    continue
  fi
  path=${BYNAME[$name]:-}
  [ -n "$path" ] || die "module $name neither in $MODDIR/modules.dep nor built in"
  add_module "$path"
done

# -------------------------------------------------------------------- init --
read -r -d '' INIT <<'EOF' || true
#!/bin/busybox sh
# virtio-mq guest init: load virtio-net, bring eth0 up, ping the peer, power off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
ip=${vmq_ip:-192.0.2.2/24}
peer=${vmq_peer:-192.0.2.1}
count=${vmq_count:-3}
psize=${vmq_ping_size:-56}
finish() { echo "GUEST-DONE"; sync; poweroff -f; sleep 5; exit 1; }
echo "GUEST-BOOT kernel=$(uname -r) cpus=$(nproc) uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /modules.list); do
  insmod "/modules/$m" || echo "GUEST-INSMOD-FAIL $m"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -e /sys/class/net/eth0 ]; then
  echo "GUEST-FAIL no eth0 ($(ls /sys/class/net | tr '\n' ' '))"
  dmesg | grep -iE 'virtio|net' | tail -n 20
  finish
fi
echo "GUEST-NETDEVS $(ls /sys/class/net | tr '\n' ' ')"
echo "GUEST-FEATURES $(cat /sys/class/net/eth0/device/features 2>/dev/null || echo unknown)"
ip link set lo up
ip addr add "$ip" dev eth0
ip link set eth0 up
if [ -n "${vmq_queues:-}" ] && command -v ethtool >/dev/null 2>&1; then
  if timeout 30 ethtool -L eth0 combined "$vmq_queues"; then echo "GUEST-ETHTOOL-L combined=$vmq_queues ok"; else echo "GUEST-ETHTOOL-L combined=$vmq_queues failed"; fi
fi
command -v ethtool >/dev/null 2>&1 && ethtool -l eth0 | sed -n '/Current/,$p' | sed 's/^/GUEST-CHANNELS /'
rx=$(ls -d /sys/class/net/eth0/queues/rx-* | wc -l)
tx=$(ls -d /sys/class/net/eth0/queues/tx-* | wc -l)
echo "GUEST-QUEUES rx=$rx tx=$tx ($(ls /sys/class/net/eth0/queues | tr '\n' ' '))"
echo "GUEST-LINK $(cat /sys/class/net/eth0/operstate) mac=$(cat /sys/class/net/eth0/address) mtu=$(cat /sys/class/net/eth0/mtu)"
echo "GUEST-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ -n "${vmq_mig:-}" ]; then
  # Live migration (test/interop/serve-migrate.test.ts): while QEMU moves this guest, receive a
  # stream on port 5001 (its sha256 printed at EOF) and send `yes $vmq_mig` to PEER:5002 until
  # the peer closes; both connections outlive the migration.
  echo "GUEST-MIG-LISTEN"
  # stdin: the console, where nothing arrives (at EOF on stdin busybox nc would stop at once).
  ( nc -l -p 5001 </dev/console | sha256sum | sed 's/ .*//; s/^/GUEST-MIG-RX sha256=/' ) &
  rxpid=$!
  yes "$vmq_mig" | nc "$peer" 5002 2>/dev/null
  echo "GUEST-MIG-TX-END"
  wait $rxpid
  echo "GUEST-MIG-END uptime=$(cut -d' ' -f1 /proc/uptime)"
fi
ok=1
cpu=0
while [ $cpu -lt "$(nproc)" ]; do
  mask=$(printf '%x' $((1 << cpu)))
  out=$(taskset "$mask" ping -c "$count" -s "$psize" -w 10 "$peer" 2>&1); rc=$?
  echo "GUEST-PING cpu=$cpu rc=$rc $(echo "$out" | grep -E 'transmitted|round-trip' | tr '\n' ' ')"
  [ $rc -eq 0 ] || ok=0
  cpu=$((cpu + 1))
done
if command -v ethtool >/dev/null 2>&1; then
  ethtool -S eth0 | grep -E '(rx|tx)_queue_[0-9]+_packets' | sed 's/^ */GUEST-STAT /; s/: */=/'
fi
# IP fragmentation counters (a ping above the MTU is fragmented and reassembled).
echo "GUEST-IPFRAG $(awk '/^Ip: [A-Z]/{split($0,h)} /^Ip: [0-9]/{for(i=2;i<=NF;i++) if(h[i]~/^(ReasmReqds|FragCreates)$/) printf "%s=%s ",h[i],$i}' /proc/net/snmp)"
if [ -n "${vmq_offloads:-}" ] && command -v ethtool >/dev/null 2>&1; then
  ethtool -k eth0 | grep -E '^(tx-checksumming|rx-checksumming|tcp-segmentation-offload|tx-tcp-segmentation|tx-tcp6-segmentation|generic-receive-offload|rx-gro-hw|tx-udp-segmentation):' | sed 's/ \[fixed\]//; s/: /=/; s/^/GUEST-OFFLOAD /'
fi
if [ -n "${vmq_iperf:-}" ] && command -v iperf3 >/dev/null 2>&1; then
  for streams in $(echo "${vmq_iperf_streams:-4}" | tr ',' ' '); do
    for dir in tx rx; do
      flag=""; [ "$dir" = rx ] && flag=-R
      out=$(timeout $((vmq_iperf + 40)) iperf3 -c "$peer" -P "$streams" -t "$vmq_iperf" $flag -f m 2>&1); rc=$?
      echo "GUEST-IPERF-DONE dir=$dir streams=$streams rc=$rc"
      echo "$out" | grep -E 'receiver|error' | sed "s/^/GUEST-IPERF dir=$dir streams=$streams rc=$rc /"
    done
  done
fi
if [ -n "${vmq_iperf_channels:-}" ] && command -v iperf3 >/dev/null 2>&1 && command -v ethtool >/dev/null 2>&1; then
  set -- $(echo "$vmq_iperf_channels" | tr ',' ' ')
  secs=$1; n1=$2; n2=$3
  timeout $((secs + 40)) iperf3 -c "$peer" -P 4 -t "$secs" -R -f m >/tmp/liperf 2>&1 &
  ipid=$!
  sleep $((secs / 3))
  if timeout 30 ethtool -L eth0 combined "$n1"; then r=ok; else r=failed; fi
  echo "GUEST-LIPERF phase=set combined=$n1 $r uptime=$(cut -d' ' -f1 /proc/uptime)"
  sleep $((secs / 3))
  if timeout 30 ethtool -L eth0 combined "$n2"; then r=ok; else r=failed; fi
  echo "GUEST-LIPERF phase=set combined=$n2 $r uptime=$(cut -d' ' -f1 /proc/uptime)"
  wait $ipid; rc=$?
  echo "GUEST-LIPERF-DONE rc=$rc"
  grep -E 'receiver|error' /tmp/liperf | sed "s/^/GUEST-LIPERF dir=rx rc=$rc /"
fi
if [ -n "${vmq_channels:-}" ] && command -v ethtool >/dev/null 2>&1; then
  allcpus=$(printf '%x' $(((1 << $(nproc)) - 1)))
  for n in $(echo "$vmq_channels" | tr ',' ' '); do
    if timeout 30 ethtool -L eth0 combined "$n"; then r=ok; else r=failed; fi
    cur=$(ethtool -l eth0 | sed -n '/Current/,$p' | awk '/Combined/{print $2}')
    echo "GUEST-CHANNELS-SET combined=$n $r current=$cur rx=$(ls -d /sys/class/net/eth0/queues/rx-* | wc -l) tx=$(ls -d /sys/class/net/eth0/queues/tx-* | wc -l)"
    ethtool -S eth0 | grep -E '(rx|tx)_queue_[0-9]+_packets' | sed "s/^ */GUEST-QSTAT combined=$n at=before /; s/: */=/"
    q=0
    while [ "$q" -lt "${cur:-0}" ]; do
      for x in /sys/class/net/eth0/queues/tx-*; do
        if [ "$x" = "/sys/class/net/eth0/queues/tx-$q" ]; then echo "$allcpus" >"$x/xps_cpus"; else echo 0 >"$x/xps_cpus"; fi
      done
      out=$(ping -c 2 -w 10 "$peer" 2>&1); rc=$?
      echo "GUEST-QPING combined=$n txq=$q rc=$rc $(echo "$out" | grep transmitted)"
      q=$((q + 1))
    done
    ethtool -S eth0 | grep -E '(rx|tx)_queue_[0-9]+_packets' | sed "s/^ */GUEST-QSTAT combined=$n at=after /; s/: */=/"
  done
fi
if [ $ok -eq 1 ]; then
  echo "GUEST-PING-OK"
else
  ifconfig eth0
  ip neigh
  dmesg | grep -iE 'virtio|eth0' | tail -n 20
  echo "GUEST-PING-FAIL"
fi
echo "GUEST-END uptime=$(cut -d' ' -f1 /proc/uptime)"
finish
EOF

# --------------------------------------------------------------- libraries --
# Shared libraries (and the loader) of an executable, one path a line.
libs_of() {
  ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' || true
}

# ------------------------------------------------------------------- build --
busybox_id=$(/bin/busybox 2>&1 | head -n1 || true)
ethtool_id=$([ -n "$ETHTOOL" ] && "$ETHTOOL" --version 2>/dev/null || echo none)
iperf3_id=$([ -n "$IPERF3" ] && "$IPERF3" --version 2>/dev/null | head -n1 || echo none)
script_id=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
stamp=$(printf '%s\n' "kernel $KVER $(stat -c '%s %Y' "/boot/vmlinuz-$KVER")" "busybox $busybox_id $(stat -c '%s %Y' /bin/busybox)" \
  "ethtool $ethtool_id" "iperf3 $iperf3_id" "modules ${ORDER[*]}" "script $script_id" "$INIT" | sha256sum | cut -d' ' -f1)
KERNEL=$DIR/vmlinuz-$KVER
INITRD=$DIR/initramfs-$KVER-${stamp:0:16}.cpio.gz

mkdir -p "$DIR" || die "cannot create $DIR"
exec 9>"$DIR/.lock"
command -v flock >/dev/null 2>&1 && flock 9

# Images of other versions of this script (or of older inputs) nobody used for a week.
find "$DIR" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "${INITRD##*/}" -mtime +7 -delete 2>/dev/null || true
if [ -f "$KERNEL" ] && [ -f "$INITRD" ] && cmp -s "/boot/vmlinuz-$KVER" "$KERNEL"; then
  touch "$INITRD" # last use, for the clean-up above
  log "up to date: kernel $KVER, initramfs $INITRD"
else
  log "building initramfs for kernel $KVER in $DIR (modules: $(printf '%s ' "${ORDER[@]##*/}"))"
  work=$(mktemp -d "$DIR/.build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  root=$work/root
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,modules}
  cp /bin/busybox "$root/bin/busybox"
  for lib in $(libs_of /bin/busybox); do mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; done
  if [ -n "$ETHTOOL" ]; then
    cp -L "$ETHTOOL" "$root/sbin/ethtool"
    for lib in $(libs_of "$ETHTOOL"); do mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; done
  fi
  if [ -n "$IPERF3" ]; then
    cp -L "$IPERF3" "$root/usr/bin/iperf3"
    for lib in $(libs_of "$IPERF3"); do mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; done
  fi
  : >"$root/modules.list"
  for path in "${ORDER[@]}"; do
    src=$MODDIR/$path
    base=${path##*/}
    dst=${base%%.ko*}.ko
    case "$base" in
      *.ko) cp "$src" "$root/modules/$dst" ;;
      *.ko.xz) xz -dc "$src" >"$root/modules/$dst" ;;
      *.ko.zst) zstd -qdc "$src" >"$root/modules/$dst" ;;
      *.ko.gz) gzip -dc "$src" >"$root/modules/$dst" ;;
      *) die "unknown module format: $src" ;;
    esac
    echo "$dst" >>"$root/modules.list"
  done
  printf '%s\n' "$INIT" >"$root/init"
  chmod 755 "$root/init"
  echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
  # newc archive (busybox cpio needs no host cpio), gzip (CONFIG_RD_GZIP).
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | /bin/busybox cpio -o -H newc 2>/dev/null) | gzip -9 >"$work/initramfs.cpio.gz"
  cp "/boot/vmlinuz-$KVER" "$work/vmlinuz"
  mv -f "$work/vmlinuz" "$KERNEL"
  mv -f "$work/initramfs.cpio.gz" "$INITRD"
  rm -rf "$work"
  trap - EXIT
  log "built $INITRD ($(stat -c %s "$INITRD") bytes)"
fi

echo "KERNEL=$KERNEL"
echo "INITRD=$INITRD"
