#!/bin/sh
# tests/kernels/pipapo.sh: a bare nft reproduction attempt for issue 19's
# item 3 (engine 29's flaky IPv6 drop): does the concatenated interval
# (pipapo) lookup `ip6 saddr . ct original proto-dst @allow_tcp_v6_ranges`
# ever miss a listed source, with or without other elements of the set
# changing meanwhile? No daemon, no Docker: one table, a prober from a
# listed network knocking on a listener, and every failed connection
# counted. Runs in a guest of tests/kernels/boot-kernel.sh:
#   tests/kernels/boot-kernel.sh bullseye tests/kernels/pipapo.sh target/kernels/knock
# Env: SECONDS_EACH=10 (per phase).
# Result on 6.18.44 (the CI machine's kernel, run in a namespace of its
# own): 0 of 1,668 connections failed with the set static, 0 of 1,677
# with elements churning: no miss. The e2e test now says, when its
# first probe fails, whether the guard dropped the SYN
# (tests/e2e/src/lib.rs, assert_listed_source_reaches).
set -u
PATH=/payload:/bin:/sbin
ip() { /bin/ip "$@"; } # busybox would run its own applet
SECONDS_EACH=${SECONDS_EACH:-10}
KERNEL="$(sed -n 's/.* Debian \([^ ]*\) .*/\1/p' /proc/version) ($(uname -r))"
ip netns add wan
ip link add wan0 type veth peer name eth0 netns wan
ip addr add fd00:76::1/64 dev wan0 nodad
ip link set wan0 up
ip -n wan addr add fd00:76::2/64 dev eth0 nodad
ip -n wan link set eth0 up
ip -n wan link set lo up
knock listen '[fd00:76::1]:8080' &
listener=$!
nft -f - <<'EOF'
table inet pipapo {
  set allow_tcp_v6_ranges {
    type ipv6_addr . inet_service
    flags interval
    elements = { fd00:76::/64 . 8080, 2001:db8::/32 . 8086 }
  }
  chain input {
    type filter hook input priority filter - 1; policy accept;
    ct state established,related accept
    iifname "lo" accept
    meta l4proto tcp ip6 saddr . ct original proto-dst @allow_tcp_v6_ranges accept
    tcp dport 8080 counter drop
  }
}
EOF
sleep 0.5
phase() { # name; probes for SECONDS_EACH from a listed source
  rm -f /tmp/stop
  ip netns exec wan knock probe /tmp/stop 5 900 '[fd00:76::1]:8080' >/tmp/out &
  p=$!
  sleep "$SECONDS_EACH"
  touch /tmp/stop
  wait $p
  a=$(sed -n 's/.*attempts=\([0-9]*\).*/\1/p' /tmp/out)
  t=$(sed -n 's/.*through=\([0-9]*\).*/\1/p' /tmp/out)
  echo "PIPAPO [$KERNEL] $1: listed source, $((a - t)) of $a connections failed; drop counter: $(nft list chain inet pipapo input | sed -n 's/.*counter packets \([0-9]*\).*/\1/p')"
}
phase "static set"
# other elements of the same set added and deleted meanwhile, as the daemon
# does when Docker's ports or the allowlist change
(i=0; while [ ! -e /tmp/stop-churn ]; do
  i=$(((i % 200) + 1))
  nft add element inet pipapo allow_tcp_v6_ranges "{ 2001:db8:$i::/48 . 9000-9010 }"
  nft delete element inet pipapo allow_tcp_v6_ranges "{ 2001:db8:$i::/48 . 9000-9010 }"
done) &
churn=$!
phase "elements churning"
touch /tmp/stop-churn
wait $churn
# the listener holds stdout open: the script would not end
kill $listener
