#!/usr/bin/env bash
# When each host of a running lab installed its packages: the first and last dpkg
# action after the container started from its image (the image's own dpkg.log lines
# are skipped), and how many packages. Overlapping windows are hosts installing at the
# same time (site.yml's install play, free strategy). docs/benchmarks.md.
#
#   bench/install_windows.sh [NETWORK]      (default: puppet-lab, the first lane / the demo)
set -euo pipefail

network=${1:-puppet-lab}
printf '%-24s %-9s %-9s %s\n' host first last packages
for container in $(docker ps --filter "network=$network" --format '{{.Names}}' | sort); do
  image=$(docker inspect -f '{{.Config.Image}}' "$container")
  skip=$(docker run --rm "$image" sh -c 'wc -l < /var/log/dpkg.log')
  docker exec "$container" sh -c "tail -n +$((skip + 1)) /var/log/dpkg.log" | awk -v host="$container" '
    / install / { if (!first) first = $2; n++ }
    / status installed / { last = $2 }
    END { printf "%-24s %-9s %-9s %d\n", host, (first ? first : "-"), (last ? last : "-"), n }'
done
