#!/bin/sh
# tests/kernels/swarm_mesh.sh: Swarm's ingress routing mesh with real
# traffic, inside a Debian kernel booted by tests/kernels/boot-kernel.sh
# (busybox sh, root, a guest of its own: this script may change the
# guest's root namespace freely). Run by scripts/test-swarm-mesh, which
# puts in /payload: portguardd, guardctl, knock (tests/kernels/knock.rs),
# conntrack, Docker 20.10 (dockerd, containerd, containerd-shim-runc-v2,
# runc, docker-init, docker-proxy, the docker CLI), xtables-nft-multi,
# xtables.tar (iptables' extensions) and busybox.tar (the tree of the e2e
# suite's busybox image, portguard_e2e::BUSYBOX_IMAGE).
#
# Two Docker nodes, each a dockerd in a network namespace (and a UTS
# namespace: its own hostname) of its own, on a bridge `lan` in the
# guest's root namespace: node A (10.50.0.1, manager) and node B
# (10.50.0.2, worker). Two services published through the ingress routing
# mesh: `meshsvc` (-p 8083:80, its task on node A, listed) and `othersvc`
# (-p 8084:80, its task on node B, not listed). A prober in the namespace
# `wan` (10.50.0.100, same bridge) knocks on both ports of both nodes and
# counts the connections that got through: once without the guard, then
# with portguardd on both nodes (`[[allow]] container = "meshsvc"`), then
# with node B's entry as a port (`port = 8083`; a worker cannot list
# services). One MESH line per phase, node, address and service; exit
# status 1 when a count promised to be 0 is not, or the listed service is
# closed where it is promised open, or the lab never worked.
#
# Env (from the kernel command line): PROBE_SECS=4 INTERVAL_MS=50
# TIMEOUT_MS=1000 (the prober's run per phase, its spacing and patience).
set -u
PATH=/payload:/bin:/sbin
PROBE_SECS=${PROBE_SECS:-4}
INTERVAL_MS=${INTERVAL_MS:-50}
TIMEOUT_MS=${TIMEOUT_MS:-1000}
KERNEL="$(sed -n 's/.* Debian \([^ ]*\) .*/\1/p' /proc/version) ($(uname -r))"
[ "$KERNEL" != " ($(uname -r))" ] || KERNEL=$(uname -r)
A4=10.50.0.1
B4=10.50.0.2
A6='[fd00:50::1]'
B6='[fd00:50::2]'
M=/mesh
failed=0
# Debian's static busybox runs its own applets before PATH: iproute2's ip
# (netns, veth, bridge) must be named by path.
ip() { /bin/ip "$@"; }
now() { cut -d' ' -f1 /proc/uptime; }
T0=$(now)
since() { awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
say() { echo "mesh: [$(since) s] $*"; }
fail() {
  echo "FAIL [$KERNEL] $*"
  failed=1
}
node_addr() { case $1 in a) echo "$A4" ;; b) echo "$B4" ;; esac; }
NODE() { echo "$1" | tr ab AB; }
dk() { # node docker-args...
  n=$1
  shift
  docker -H "unix://$M/$n/docker.sock" "$@"
}
in_node() { # node command...
  n=$1
  shift
  nsenter --net="/run/netns/$n" "$@"
}
# waits up to $2 seconds for the command $3... to succeed (the guest is
# slow: a deadline on the clock, not a count of tries); status 99 of the
# command: give up at once. POLL: seconds between tries (each docker CLI
# call is a 45 MB Go program started under TCG, which slows dockerd down).
wait_for() { # what seconds command...
  what=$1
  end=$(awk -v a="$(now)" -v s="$2" 'BEGIN { printf "%d", a + s }')
  shift 2
  while :; do
    "$@" >/dev/null 2>&1
    case $? in 0) return 0 ;; 99) break ;; esac
    [ "$(now | cut -d. -f1)" -lt "$end" ] || break
    sleep "${POLL:-0.5}"
  done
  fail "$what: not within the time given"
  return 1
}
# ---- the guest as a Docker host ----
prepare() {
  mkdir -p /sys/fs/cgroup /etc "$M"
  mount -t cgroup2 none /sys/fs/cgroup
  # iptables' extensions, where XTABLES_LIBDIR (dockerd's environment) says
  tar -xf /payload/xtables.tar -C /payload
  for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf xtables-nft-multi "/payload/$t"
  done
  echo 'nameserver 127.0.0.1' >/etc/resolv.conf
  echo '127.0.0.1 localhost' >/etc/hosts
  modprobe -a br_netfilter ip_vs ip_vs_rr xt_ipvs vxlan nf_conntrack_netlink 2>&1 | sed 's/^/modprobe: /'
}

# ---- the lab: two nodes and an outside prober on one bridge ----
lab() {
  # Forwarding on in the guest's root namespace first, as on any Docker
  # host: a new namespace inherits IPv4's conf/all from it, and the ingress
  # sandbox that dockerd creates must forward (IPVS in NAT mode answers
  # on the FORWARD hook); with it off the task's SYN-ACKs die there.
  sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  ip link add lan type bridge
  ip link set lan up
  for n in a b wan; do
    case $n in a) i=1 ;; b) i=2 ;; wan) i=100 ;; esac
    ip netns add "$n"
    ip link add "lan-$n" type veth peer name eth0 netns "$n"
    ip link set "lan-$n" master lan up
    ip -n "$n" addr add "10.50.0.$i/24" dev eth0
    ip -n "$n" addr add "fd00:50::$i/64" dev eth0 nodad
    ip -n "$n" link set eth0 up
    ip -n "$n" link set lo up
  done
  # forwarding on in the nodes, as on a Docker host (a new namespace
  # starts with it off)
  for n in a b; do
    in_node $n sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  done
}

# containerd first, on its own: dockerd gives the containerd it starts
# itself too little time in a slow guest ("timeout waiting for containerd
# to start").
containerd_start() { # node
  c=$M/$1/containerd
  mkdir -p "$c"
  printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\naddress = "%s/containerd.sock"\n' \
    "$c" "$c" "$c" >"$c/config.toml"
  in_node "$1" containerd --config "$c/config.toml" >"$c/containerd.log" 2>&1 &
  echo $! >"$c/pid"
}
containerd_up() { # node
  kill -0 "$(cat "$M/$1/containerd/pid")" || return 99
  [ -S "$M/$1/containerd/containerd.sock" ]
}
dockerd_start() { # node
  # DOCKER_RAMDISK: the guest's root is the initramfs, where runc cannot
  # pivot_root (it moves the container's root and chroots instead).
  nsenter --net="/run/netns/$1" unshare -u sh -c "hostname node$1 && exec env DOCKER_RAMDISK=true XTABLES_LIBDIR=/payload/xtables dockerd \
    --data-root $M/$1/data --exec-root $M/$1/exec -H unix://$M/$1/docker.sock --pidfile $M/$1/docker.pid \
    --containerd $M/$1/containerd/containerd.sock --storage-driver vfs" >"$M/$1/dockerd.log" 2>&1 &
  echo $! >"$M/$1/dockerd.pid"
}
# dockerd answers; fails at once when it exited
dockerd_up() { # node
  kill -0 "$(cat "$M/$1/dockerd.pid")" || return 99
  dk "$1" version
}

# The image by its ID: Swarm's executor tries to pull any other reference
# first (there is no registry here), so node B gets node A's image as
# `docker save | docker load` (the same ID), not an import of its own.
service() { # name port node
  dk a service create --detach --no-resolve-image --name "$1" --publish "$2:80" \
    --constraint "node.hostname==node$3" "$IMAGE" /bin/httpd -f -p 80 -h /www >/dev/null
}
running() { dk a service ps --format '{{.CurrentState}}' "$1" | grep -q Running; }
# a TCP handshake from outside (busybox wget crashes under ip netns exec here)
answers() {
  rm -f /tmp/answers.stop
  (sleep 1 && touch /tmp/answers.stop) &
  ip netns exec wan knock probe /tmp/answers.stop 100 1000 "$1" | grep -qv 'through=0 '
}

# ---- the prober ----
probe() { # -> /tmp/probe.out: "ADDR attempts=N through=M" per address
  rm -f /tmp/probe.stop /tmp/probe.out
  ip netns exec wan knock probe /tmp/probe.stop "$INTERVAL_MS" "$TIMEOUT_MS" \
    "$A4:8083" "$B4:8083" "$A4:8084" "$B4:8084" "$A6:8083" "$B6:8083" "$A6:8084" "$B6:8084" >/tmp/probe.out 2>&1 &
  prober=$!
  sleep "$PROBE_SECS"
  touch /tmp/probe.stop
  wait "$prober"
}
through() { awk -v a="$1" '$1 == a { sub("through=", "", $3); print $3 }' /tmp/probe.out; }
attempts() { awk -v a="$1" '$1 == a { sub("attempts=", "", $2); print $2 }' /tmp/probe.out; }
# One MESH line per node and port of this phase. promise: open (every
# attempt but a few must get through; at least one), 0 (none may), - (a
# count the docs state, not checked here).
mesh_line() { # phase node addr port role promise note
  t=$(through "$3:$4")
  m=$(attempts "$3:$4")
  verdict=ok
  [ -n "$t" ] && [ -n "$m" ] && [ "$m" != 0 ] || verdict=NO-DATA
  case $6 in
    0) [ "${t:-1}" = 0 ] || verdict=FAIL ;;
    open) [ "${t:-0}" != 0 ] || verdict=FAIL ;;
  esac
  echo "MESH [$KERNEL] guard=$1 node $(NODE "$2") $3:$4 $5: ${t:-?} of ${m:-?} through promised=$6 $verdict $7"
  [ "$verdict" = ok ] || fail "guard=$1 node $(NODE "$2") $3:$4 $5: ${t:-?} of ${m:-?} through, promised $6"
}
report() { # phase promise-listed-A promise-listed-B promise-unlisted note-B
  mesh_line "$1" a "$A4" 8083 listed "$2" "(task on A)"
  mesh_line "$1" b "$B4" 8083 listed "$3" "(task on A, over the overlay) $5"
  mesh_line "$1" a "$A4" 8084 unlisted "$4" "(task on B, over the overlay)"
  mesh_line "$1" b "$B4" 8084 unlisted "$4" "(task on B)"
  # IPv6: the mesh has no IPv6 (no DNAT, no IPVS); dockerd only holds the
  # published port with a listener that never accepts (libnetwork's
  # plumbProxy), which completes handshakes on the INPUT path.
  for n in a b; do
    for p in 8083 8084; do
      if [ $n = a ]; then addr=$A6; else addr=$B6; fi
      echo "MESH-V6 [$KERNEL] guard=$1 node $(NODE $n) $addr:$p: $(through "$addr:$p") of $(attempts "$addr:$p") handshakes (dockerd's placeholder listener; the mesh serves no IPv6)"
    done
    # which of dockerd's listeners the guard judges as the Docker API (the
    # placeholders are the mesh's ports, not the API)
    [ "$1" = none ] || echo "MESH-API [$KERNEL] guard=$1 node $(NODE $n): judged as the Docker API: $(in_node $n nft list set inet portguard docker_api_tcp 2>&1 | grep -o 'elements = {[^}]*}')"
  done
}

# ---- the guard ----
guard_start() { # node allow-toml
  g=$M/$1/guard
  mkdir -p "$g/state"
  chmod 0755 "$g"
  chmod 0700 "$g/state"
  guard_config "$1" "$2"
  in_node "$1" portguardd --config "$g/portguard.toml" --socket "$g/control.sock" --state-dir "$g/state" \
    --metrics-file "$g/portguard.prom" >>"$g/portguardd.log" 2>&1 &
  echo $! >"$g/pid"
}
guard_config() { # node allow-toml
  g=$M/$1/guard
  printf '[guard]\nmode = "enforce"\nlog_blocked = false\n[docker]\nsocket = "%s"\n%s\n' \
    "$M/$1/docker.sock" "$2" >"$g/portguard.toml"
}
guard_ready() { # node: installed, and Docker's view in the table (docker_gwbridge judged)
  guardctl --socket "$M/$1/guard/control.sock" status --json 2>/dev/null | grep -q '"installed": *true' &&
    in_node "$1" nft list set inet portguard judged_bridges 2>/dev/null | grep -q docker_gwbridge
}
allows() { in_node "$1" nft list set inet portguard allow_tcp 2>/dev/null | grep -q "$2"; }

evidence() { # what the nodes hold, when something went wrong
  echo "--- wan: wget http://$A4:8083/, routes, neighbours"
  ip netns exec wan wget -T 5 -O - "http://$A4:8083/" 2>&1 | head -3
  ip -n wan route
  ip -n wan neigh
  probe
  echo "--- a probe of ${PROBE_SECS}s:"
  cat /tmp/probe.out
  for n in a b; do
    echo "--- node $(NODE $n): addresses, listeners"
    ip -n $n -br addr
    in_node $n sysctl net.ipv4.ip_forward net.ipv4.conf.all.rp_filter net.ipv4.conf.eth0.rp_filter
    in_node $n netstat -tln 2>&1 | grep -E ':808[34]'
    echo "--- node $(NODE $n): conntrack -L (all, first 30)"
    in_node $n conntrack -L 2>&1 | head -30
  done
  for n in a b; do
    echo "--- node $(NODE $n): nft list ruleset"
    in_node $n nft list ruleset 2>&1 | grep -v '^\s*$' | head -150
    echo "--- node $(NODE $n): conntrack -L (ports 8083, 8084)"
    in_node $n conntrack -L 2>/dev/null | grep -E 'dport=808[34] ' | head -20
    echo "--- node $(NODE $n): ingress_sbox: IPVS and conntrack"
    nsenter --net="$M/$n/exec/netns/ingress_sbox" cat /proc/net/ip_vs 2>&1
    nsenter --net="$M/$n/exec/netns/ingress_sbox" conntrack -L 2>/dev/null | head -10
    nsenter --net="$M/$n/exec/netns/ingress_sbox" sysctl net.ipv4.vs.conntrack net.ipv4.ip_forward 2>&1
    nsenter --net="$M/$n/exec/netns/ingress_sbox" nft list table ip nat 2>&1 | grep -a -E 'counter|chain' | head -20
    nsenter --net="$M/$n/exec/netns/ingress_sbox" nft list table ip mangle 2>&1 | grep -a counter | head -5
    nsenter --net="$M/$n/exec/netns/ingress_sbox" ip route 2>&1
    ls "$M/$n/exec/netns"
    for ns in "$M/$n/exec/netns"/*; do
      case $ns in */ingress_sbox) continue ;; esac
      echo "-- netns $ns"; nsenter --net="$ns" ip -br addr 2>&1 | head -6; nsenter --net="$ns" ip route 2>&1 | head -4
      nsenter --net="$ns" sysctl net.bridge.bridge-nf-call-iptables 2>&1
      nsenter --net="$ns" conntrack -L 2>/dev/null | grep -a -E 'dport=80 |sport=80 ' | head -3
    done
    if [ -s "$M/$n/guard/portguardd.log" ]; then
      echo "--- node $(NODE $n): portguardd log (last 20 lines)"
      tail -20 "$M/$n/guard/portguardd.log"
      guardctl --socket "$M/$n/guard/control.sock" ports 2>&1 | head -20
    fi
  done
}

# ---- main ----
say "kernel $KERNEL"
prepare
lab
for n in a b; do
  containerd_start $n
  wait_for "containerd on node $(NODE $n)" 120 containerd_up $n || { tail -30 "$M/$n/containerd/containerd.log"; exit 1; }
  dockerd_start $n
done
for n in a b; do
  POLL=3 wait_for "dockerd on node $(NODE $n)" 240 dockerd_up $n || { grep -v module=grpc "$M/$n/dockerd.log" | tail -30; exit 1; }
done
say "both dockerds answer"
IMAGE=$(dk a import /payload/busybox.tar pgbusybox)
dk a save pgbusybox | dk b load >/dev/null || fail "docker import of the busybox image"
say "image $IMAGE on both nodes"
dk a swarm init --advertise-addr "$A4" --listen-addr "$A4:2377" >/dev/null || fail "swarm init on node A"
dk b swarm join --token "$(dk a swarm join-token -q worker)" --advertise-addr "$B4" --listen-addr "$B4:2377" \
  "$A4:2377" >/dev/null || fail "swarm join of node B"
say "swarm: $(dk a node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}' | tr '\n' ';')"
service meshsvc 8083 a || fail "service create meshsvc"
service othersvc 8084 b || fail "service create othersvc"
POLL=10 wait_for "meshsvc running on node A" 720 running meshsvc &&
  POLL=10 wait_for "othersvc running on node B" 300 running othersvc || {
  dk a service ps --no-trunc meshsvc othersvc
  for n in a b; do
    echo "--- dockerd node $(NODE $n) (last 80 lines)"
    grep -v module=grpc "$M/$n/dockerd.log" | tail -80 | cut -c1-400
  done
  ps
  exit 1
}
say "tasks: $(dk a service ps --no-trunc --format '{{.Name}} on {{.Node}}: {{.CurrentState}} {{.Error}}' meshsvc othersvc | tr '\n' ';')"
for a in "$A4:8083" "$B4:8083" "$A4:8084" "$B4:8084"; do
  POLL=2 wait_for "$a answers through the mesh without the guard" 60 answers "$a" || break
done
if [ "$failed" != 0 ]; then
  evidence
  for n in a b; do
    echo "--- dockerd node $(NODE $n): errors and warnings (last 40)"
    grep -E 'level=(error|warning)' "$M/$n/dockerd.log" | tail -40
  done
  exit 1
fi
say "the mesh serves both services on both nodes"

# without the guard every port answers (else the counts below prove nothing)
probe
report none open open open ""

guard_start a '[[allow]]
container = "meshsvc"'
guard_start b '[[allow]]
container = "meshsvc"'
wait_for "portguardd on node A judges Docker's bridges" 60 guard_ready a
wait_for "portguardd on node B judges Docker's bridges" 60 guard_ready b
say "guards up: node A: $(guardctl --socket $M/a/guard/control.sock status --brief 2>&1); node B: $(guardctl --socket $M/b/guard/control.sock status --brief 2>&1)"
# a worker cannot list services, so a service's name opens nothing there
# (docs/compatibility.md "Swarm"): stated, not checked
probe
report "on(container=meshsvc)" open - 0 "(worker: no service names)"

# node B: the listed service as a port, which needs no name
guard_config b '[[allow]]
port = 8083'
guardctl --socket "$M/b/guard/control.sock" reload || say "guardctl reload on node B failed"
wait_for "node B's guard allows 8083" 30 allows b 8083
probe
report "on(B:port=8083)" open open 0 ""

[ "$failed" = 0 ] || evidence
say "done"
exit "$failed"
