#!/usr/bin/env bash
# The compose cluster's certificates, made by the nines binary itself (no openssl):
#   deploy/compose/certs.sh [DIR]          (default deploy/compose/certs, ignored by git)
# a CA for cluster "compose", node-1..3 for the hostnames n1..n3 (and 127.0.0.1, for the ports
# published on loopback), an `operator` client with role drill (for `nines` commands) and a
# `components` client with role app (the agents hand it to the counter). docker-compose.yml
# mounts DIR (NINES_CERTS, default ./certs) read-only at /etc/nines/tls.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:-$here/certs}"
profile="${NINES_PROFILE:-release}"
[[ "$profile" == debug ]] || profile=release
nines="${NINES_BIN:-${CARGO_TARGET_DIR:-$repo/target}/$profile/nines}"
[[ -x "$nines" ]] || nines="$(command -v nines || true)"
[[ -x "$nines" ]] || { echo "certs.sh: no nines binary (build it, or set NINES_BIN)" >&2; exit 1; }

"$nines" cert init --dir "$dir" --cluster compose >/dev/null
for i in 1 2 3; do
  "$nines" cert node --dir "$dir" --id "$i" --name "n$i" --addr "n$i,127.0.0.1" >/dev/null
done
"$nines" cert client --dir "$dir" --name operator --role drill >/dev/null
"$nines" cert client --dir "$dir" --name components --role app >/dev/null
# The containers run as root with no capabilities: root cannot read another user's 0600 file
# without CAP_DAC_OVERRIDE. Made by root (CI), they stay 0600; made by a user, they are opened up
# to be readable (say so).
if [[ "$(id -u)" != 0 ]]; then
  chmod a+r "$dir"/*.pem "$dir"/*.key
  chmod a+rx "$dir"
  echo "certs.sh: made the files in $dir readable by all, so the containers' root can read them" >&2
fi
echo "$dir"
