#!/usr/bin/env bash
# puppetserver start-up with different JVM and JRuby settings, side by side in one run
# (docs/benchmarks.md, "puppetserver start-up"). A lab container of its own installs
# Debian's puppetserver, then starts it ROUNDS times with each variant in turn, and
# reads for each start the wall time until /status/v1/simple says "running" and the CPU
# time its JVM used meanwhile. CPU seconds are the figure to compare on a
# busy 2-core machine: they hardly depend on what else runs.
#
#   bench/jvm_startup.sh [ROUNDS]      (after ./lab setup; about 2 minutes per round)
set -euo pipefail

rounds=${1:-2}
name=lab-bench-jvm-startup
image=puppet-cluster-lab/debian:${BENCH_SUITE:-trixie}
network=${LAB_NETWORK:-puppet-lab}
# The variants: extra JAVA_ARGS after the heap, JRuby's compile mode, JRuby instances
# (the masters' role default is one per CPU: 2 here).
variants=(
  "stock|-|jit|2"
  "c1-only|-XX:TieredStopAtLevel=1|jit|2"
  "c1-only+jruby-interpreted|-XX:TieredStopAtLevel=1|off|2"
  "stock,1-jruby|-|jit|1"
  "c1-only,1-jruby|-XX:TieredStopAtLevel=1|jit|1"
)

in_container() { docker exec "$name" bash -c "$1"; }

docker rm -f "$name" >/dev/null 2>&1 || true
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$name" --hostname "$name.domain.com" --network "$network" \
  --cap-add SYS_ADMIN --security-opt seccomp=unconfined --cgroupns host \
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock --tmpfs /tmp "$image" >/dev/null
until docker exec "$name" systemctl is-system-running --wait 2>/dev/null | grep -qE '^(running|degraded)$'; do sleep 0.5; done
in_container 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq puppetserver >/dev/null 2>&1'
# The CA is made once, outside the timed starts, as the roles' CA setup does.
in_container 'puppetserver ca setup >/dev/null 2>&1'

start_once() {
  # "-" stands for no extra JVM option.
  local label=$1 args=$2 mode=$3 instances=$4
  [ "$args" != - ] || args=
  in_container "sed -i 's|^JAVA_ARGS=.*|JAVA_ARGS=\"-Xms1024m -Xmx1024m $args\"|' /etc/default/puppetserver"
  in_container "sed -i '/^ *#\\? *compile-mode:/d; /^ *#\\? *max-active-instances:/d; s|^jruby-puppet: {|jruby-puppet: {\\n    compile-mode: $mode\\n    max-active-instances: $instances|' /etc/puppet/puppetserver/conf.d/puppetserver.conf"
  in_container 'systemctl stop puppetserver'
  local t0 t1 cpu
  t0=$(date +%s.%N)
  in_container 'systemctl start puppetserver'
  in_container "until [ \"\$(curl -sk https://localhost:8140/status/v1/simple)\" = running ]; do sleep 0.2; done"
  t1=$(date +%s.%N)
  # The JVM's own CPU time (utime + stime in clock ticks, /proc/PID/stat fields 14-15),
  # computed inside the container (hence single quotes).
  # shellcheck disable=SC2016
  cpu=$(in_container 'pid=$(systemctl show -P MainPID puppetserver); echo $(( ($(cut -d" " -f14 /proc/$pid/stat) + $(cut -d" " -f15 /proc/$pid/stat)) * 1000000 / $(getconf CLK_TCK) ))')
  awk -v l="$label" -v w="$(echo "$t1 - $t0" | bc)" -v c="$cpu" \
    'BEGIN { printf "%-28s %6.1f s wall %7.1f s CPU\n", l, w, c / 1000000 }'
}

# shellcheck disable=SC2016
echo "puppetserver $(in_container 'dpkg-query -W -f "\${Version}" puppetserver') on $image, $(nproc) cores, $rounds rounds"
for ((round = 1; round <= rounds; round++)); do
  for variant in "${variants[@]}"; do
    IFS='|' read -r label args mode instances <<< "$variant"
    start_once "$label" "$args" "$mode" "$instances"
  done
done
