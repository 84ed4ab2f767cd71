#!/bin/sh
# tests/kernels/guest.sh: runs inside a Debian kernel booted by
# tests/kernels/boot-kernel.sh (busybox sh, root, a guest of its own: this
# script may change the guest's root namespace freely). /payload holds
# portguardd, guardctl, knock (tests/kernels/knock.rs) and conntrack.
#
# A small "Docker" without Docker: a network namespace `ctr` with a server
# on port 80 behind a bridge `docker0`, Docker's DNAT for the published
# ports 8080 (not listed) and 8081 (listed) in `ip nat` as iptables-nft
# writes it, and a docker-proxy-like listener on [::]:8080 and [::]:8081
# in the host namespace (Docker without IPv6 NAT serves IPv6 through it, on
# the INPUT path). The daemon's Docker socket does not exist, so it learns
# the bridge and the published ports from the state directory's
# judged.json, as a start before Docker answers does.
#
# A prober in the namespace `wan` knocks on 8080 over IPv4 (DNAT, forward
# path) and IPv6 (docker-proxy, input path) every 5 ms during each attack
# and counts the connections that got through. One RESULT line per tier
# and attack, with the exact kernel version; exit status 1 when a count
# the docs promise to be 0 is not (docs/how-it-works.md "Protection
# tiers", docs/security.md).
#
# Env (from the kernel command line): TIERS="auto twin ..." (default auto),
# ROUNDS=20 (deletions and flushes per storm), GAP=0.2 (seconds between them).
set -u
PATH=/payload:/bin:/sbin
TIERS=${TIERS:-auto}
ROUNDS=${ROUNDS:-20}
GAP=${GAP:-0.2}
KERNEL="$(sed -n 's/.* Debian \([^ ]*\) .*/\1/p' /proc/version) ($(uname -r))"
[ "$KERNEL" != " ($(uname -r))" ] || KERNEL=$(uname -r)
CONF=/etc/portguard/portguard.toml
SOCK=/run/portguard/control.sock
STATE=/var/lib/portguard
V4=10.99.0.1
V6='[fd00:99::1]'
failed=0
# Debian's static busybox runs its own applets before PATH: iproute2's ip
# (netns, veth, bridge) must be named by path.
ip() { /bin/ip "$@"; }

say() { echo "kernels: $*"; }
fail() {
  echo "FAIL [$KERNEL] $*"
  failed=1
}

# ---- the lab ----
lab() {
  sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 >/dev/null
  ip netns add ctr
  ip netns add wan
  ip link add docker0 type bridge
  ip addr add 172.17.0.1/16 dev docker0
  ip link set docker0 up
  ip link add vethc0 type veth peer name eth0 netns ctr
  ip link set vethc0 master docker0 up
  ip -n ctr addr add 172.17.0.2/16 dev eth0
  ip -n ctr link set eth0 up
  ip -n ctr link set lo up
  ip -n ctr route add default via 172.17.0.1
  ip link add wan0 type veth peer name eth0 netns wan
  ip addr add 10.99.0.1/24 dev wan0
  ip addr add fd00:99::1/64 dev wan0 nodad
  ip link set wan0 up
  ip -n wan addr add 10.99.0.2/24 dev eth0
  ip -n wan addr add fd00:99::2/64 dev eth0 nodad
  ip -n wan link set eth0 up
  ip -n wan link set lo up
  docker_nat
  ip netns exec ctr knock listen 0.0.0.0:80 &
  knock listen '[::]:8080' '[::]:8081' & # dual-stack, like docker-proxy's two sockets
  sleep 0.5
}

# Docker's DNAT for the published ports, as iptables-nft writes it
docker_nat() {
  nft -f - <<'EOF'
table ip nat {
  chain PREROUTING { type nat hook prerouting priority dstnat; policy accept; fib daddr type local counter jump DOCKER; }
  chain POSTROUTING { type nat hook postrouting priority srcnat; policy accept; ip saddr 172.17.0.0/16 oifname != "docker0" masquerade; }
  chain DOCKER {
    iifname "docker0" return
    iifname != "docker0" tcp dport 8080 dnat to 172.17.0.2:80
    iifname != "docker0" tcp dport 8081 dnat to 172.17.0.2:80
  }
}
EOF
}

# ---- the prober ----
probe_start() { # addresses...
  rm -f /tmp/probe.stop /tmp/probe.out
  ip netns exec wan knock probe /tmp/probe.stop 5 300 "$@" >/tmp/probe.out 2>&1 &
  PROBER=$!
  sleep 0.3
}
probe_stop() { # -> /tmp/probe.out: "ADDR attempts=N through=M" per address
  touch /tmp/probe.stop
  wait "$PROBER"
}
through() { awk -v a="$1" '$1 == a { sub("through=", "", $3); print $3 }' /tmp/probe.out; }
attempts() { awk -v a="$1" '$1 == a { sub("attempts=", "", $2); print $2 }' /tmp/probe.out; }
counts() { # "v4 THROUGH/ATTEMPTS v6 THROUGH/ATTEMPTS" for port $1
  echo "v4 $(through "$V4:$1")/$(attempts "$V4:$1") v6 $(through "$V6:$1")/$(attempts "$V6:$1")"
}
# one RESULT line; promise: 0 (the docs promise nothing gets through) or "-" (a window the docs state)
result() { # tier attack promise extra...
  tier=$1 attack=$2 promise=$3
  shift 3
  c=$(counts 8080)
  t4=$(through "$V4:8080")
  t6=$(through "$V6:8080")
  verdict=ok
  [ -n "$t4" ] && [ -n "$t6" ] || verdict=NO-DATA
  if [ "$promise" = 0 ] && [ "${t4:-1}" != 0 -o "${t6:-1}" != 0 ]; then verdict=FAIL; fi
  echo "RESULT [$KERNEL] tier=$tier attack=$attack unlisted-8080-through: $c promised=$promise $verdict $*"
  if [ "$verdict" != ok ]; then
    fail "tier $tier, $attack: $c got through (promised $promise)"
    # where they went: conntrack's entries for the local ports that got through
    for p in $(awk -F'ports=' '{print $2}' /tmp/probe.out | tr ',' ' '); do
      grep " sport=$p " /proc/net/nf_conntrack 2>/dev/null | sed 's/^/  conntrack: /'
    done
  fi
}

forget_connections() { conntrack -F >/dev/null 2>&1; conntrack -F -f ipv6 >/dev/null 2>&1; }
tables() { nft list tables 2>/dev/null | grep portguard | sed 's/^table //' | tr '\n' ' '; }

# ---- the daemon ----
write_config() { # tier
  mkdir -p /etc/portguard "$STATE"
  chmod 0755 /etc/portguard
  chmod 0700 "$STATE"
  cat >"$CONF" <<EOF
[guard]
mode = "enforce"
log_blocked = false
protection = "$1"
[docker]
socket = "/run/no-docker/docker.sock"
[control]
socket = "$SOCK"
[[allow]]
port = 8081
EOF
  # What the guard judged when it last ran: without Docker this is how it
  # learns the bridge and the published ports (crates/portguardd/src/judged_state.rs).
  echo '{"bridges": ["docker0"], "tcp": [8080, 8081]}' >"$STATE/judged.json"
  chmod 0600 "$STATE/judged.json"
}
daemon_start() {
  portguardd --config "$CONF" --state-dir "$STATE" --metrics-file /run/no-metrics/portguard.prom >>/tmp/portguardd.log 2>&1 &
  DAEMON=$!
  i=0
  while [ $i -lt 200 ]; do
    if guardctl --socket "$SOCK" status --json 2>/dev/null | grep -q '"installed": *true'; then return 0; fi
    kill -0 "$DAEMON" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
  done
  fail "the daemon did not install its ruleset"
  tail -20 /tmp/portguardd.log
  return 1
}
daemon_stop() {
  kill -TERM "$DAEMON" 2>/dev/null
  wait "$DAEMON" 2>/dev/null
}

# ---- the attacks ----
delete_storm() { # -> DEL: outcomes of each deletion
  DEL_OK=0 DEL_EPERM=0 DEL_ABSENT=0 DEL_OTHER=0
  i=0
  while [ $i -lt "$ROUNDS" ]; do
    if [ $((i % 2)) = 0 ]; then t=portguard; else t=portguard_standby; fi
    if out=$(nft delete table inet $t 2>&1); then DEL_OK=$((DEL_OK + 1))
    else case $out in
      *"not permitted"*) DEL_EPERM=$((DEL_EPERM + 1)) ;;
      *"No such file"*) DEL_ABSENT=$((DEL_ABSENT + 1)) ;;
      *) DEL_OTHER=$((DEL_OTHER + 1)) ;;
    esac; fi
    sleep "$GAP"
    i=$((i + 1))
  done
}
flush_storm() {
  i=0
  while [ $i -lt "$ROUNDS" ]; do
    nft flush ruleset
    sleep "$GAP"
    i=$((i + 1))
  done
}

run_tier() { # tier
  tier=$1
  say "tier $tier"
  write_config "$tier"
  daemon_start || return
  js=$(guardctl --socket "$SOCK" status --json)
  got=$(echo "$js" | sed -n 's/.*"protection": *"\([a-z-]*\)".*/\1/p' | head -1)
  [ "$tier" = auto ] && name="$got(auto)" || name=$got
  [ "$tier" = auto ] || [ "$got" = "$tier" ] || fail "protection = \"$tier\" gave $got"
  echo "TIER [$KERNEL] protection=$tier -> $got; status: $(guardctl --socket "$SOCK" status | grep -i '^ *Tables' | sed 's/  */ /g')"
  say "tables: $(tables)"

  # the guard closes 8080 and keeps the listed 8081 open
  probe_start "$V4:8080" "$V6:8080" "$V4:8081" "$V6:8081"
  sleep 1
  probe_stop
  result "$name" guarded 0 "listed-8081-through: $(counts 8081)"
  [ "$(through "$V4:8081")" != 0 ] && [ "$(through "$V6:8081")" != 0 ] ||
    fail "tier $name: the listed port 8081 is closed: $(counts 8081)"

  # deletion of each copy, alternating, ROUNDS times GAP apart
  probe_start "$V4:8080" "$V6:8080"
  delete_storm
  sleep 1
  probe_stop
  result "$name" delete-storm 0 "deletions: ok=$DEL_OK refused=$DEL_EPERM absent=$DEL_ABSENT other=$DEL_OTHER; tables after: $(tables)"

  # the daemon stopped (SIGTERM): what it leaves must still judge
  probe_start "$V4:8080" "$V6:8080"
  daemon_stop
  sleep 2
  probe_stop
  result "$name" stopped 0 "tables left: $(tables)"

  # restarted over what it left
  probe_start "$V4:8080" "$V6:8080"
  daemon_start
  sleep 1
  probe_stop
  result "$name" restart 0 "tables: $(tables); restores: $(guardctl --socket "$SOCK" status --json | sed -n 's/.*"restores": *\([0-9]*\).*/\1/p' | head -1)"

  # nft flush ruleset, ROUNDS times GAP apart, last: it also deletes the
  # lab's (Docker's) DNAT, so from the first flush on IPv4 reaches
  # docker-proxy on the input path too, as it would on a host. Connections
  # that got through leave conntrack entries that a later SYN from the same
  # address and port matches as established (see docs/compatibility.md),
  # so conntrack is emptied before anything else is measured.
  probe_start "$V4:8080" "$V6:8080"
  flush_storm
  sleep 1
  probe_stop
  case $got in twin) promise=- ;; *) promise=0 ;; esac
  result "$name" flush-storm "$promise" "tables after: $(tables)"
  forget_connections
  docker_nat
  daemon_stop
  portguardd --remove-rules >>/tmp/portguardd.log 2>&1 || fail "--remove-rules failed"
  rm -f "$STATE/judged.json" "$STATE/last-good.toml"
}

# ---- main ----
say "kernel $KERNEL"
lab
# without the guard, every port answers (else the counts below prove nothing)
probe_start "$V4:8080" "$V6:8080" "$V4:8081" "$V6:8081"
sleep 1
probe_stop
echo "RESULT [$KERNEL] tier=none attack=none unlisted-8080-through: $(counts 8080) listed-8081-through: $(counts 8081)"
for a in "$V4:8080" "$V6:8080"; do
  [ "$(through "$a")" != 0 ] && [ -n "$(through "$a")" ] || fail "the lab is broken: $a does not answer without the guard"
done
for tier in $TIERS; do run_tier "$tier"; done
if [ "$failed" != 0 ]; then
  echo "--- portguardd log (last 40 lines)"
  tail -40 /tmp/portguardd.log
fi
exit "$failed"
