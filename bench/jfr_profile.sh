#!/bin/sh
# Java Flight Recorder on a master's puppetserver under load, summed up by bench/jfr_top.py
# (issue 20: where the JVM's CPU goes, in Java methods and JRuby-compiled Ruby files).
#
#   bench/jfr_profile.sh [MASTER] [WARMUP_S] [RECORD_S] [ENVIRONMENT]   (combo4 lab, ./lab's environment)
#
# Catalog requests from inside the master through its front (bench/load/backend_probe.py,
# 8 threads) for WARMUP_S + RECORD_S + 30 s; after WARMUP_S, JFR records RECORD_S with
# its "profile" settings. JFR's tools (jcmd, jfr) come with Debian's JDK, which this
# installs on the master (the roles install the JRE only). The environment must be on the
# master already (`bench/run load --environment bench` removes it when it ends): a run with
# failed catalogs profiles error handling, and is refused. Prints the hottest methods; the
# recording stays at /var/lib/puppetserver/bench.jfr on the master.
set -eu
master=${1:-puppet1.domain.com}
warmup=${2:-200}
record=${3:-90}
environment=${4:-bench}
here=$(cd "$(dirname "$0")" && pwd)
recording=/var/lib/puppetserver/bench.jfr

docker exec "$master" sh -c 'command -v jcmd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-21-jdk-headless >/dev/null'
docker exec -i "$master" sh -c 'cat > /tmp/bench-backend-probe.py' < "$here/load/backend_probe.py"
docker exec -i "$master" python3 /tmp/bench-backend-probe.py front "$master" 8 $((warmup + record + 30)) "$environment" \
    < "$here/load/facts.json" > /tmp/bench-jfr-probe.json &
load=$!
sleep "$warmup"  # the warm-up under load: a measurement window, not a wait for readiness
pid=$(docker exec "$master" systemctl show -p MainPID --value puppetserver)
docker exec "$master" rm -f "$recording"
docker exec "$master" runuser -u puppet -- jcmd "$pid" JFR.start name=bench settings=profile \
    duration="${record}s" filename="$recording" >/dev/null
sleep $((record + 5))  # the recording's own duration
docker exec "$master" sh -c "test -s $recording"
docker exec "$master" jfr print --json --events jdk.ExecutionSample --stack-depth 64 "$recording" \
    | python3 "$here/jfr_top.py" 30
wait "$load"
summary=$(tail -1 /tmp/bench-jfr-probe.json)
echo "load: $summary"
case $summary in
    *'"errors": 0}'*) ;;
    *) echo "catalog requests failed during the recording: not a profile of compiles" >&2; exit 1 ;;
esac
