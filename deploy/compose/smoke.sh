#!/usr/bin/env bash
# The compose smoke test: build the image (FROM scratch), bring up the 3-node cluster with the
# counter example, wait for a leader and a settled 2N assignment, then two drills:
#   1. component kill: kill -9 the active counter inside its container → the standby is active;
#   2. node kill: docker kill the container of the (new) active → the standby is active;
# check each failover in `nines amf status -o json` and `nines amf history -o json` (run inside a
# surviving container, against the compose hostnames), and tear everything down, always.
#
#   deploy/compose/smoke.sh
# Env: NINES_PROFILE=release|debug and NINES_SKIP_BUILD=1 (see image.sh); SMOKE_WAIT_S bounds
# every wait (default 120).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
wait_s="${SMOKE_WAIT_S:-120}"
started=$SECONDS

say() { printf '[smoke %4ss] %s\n' "$((SECONDS - started))" "$*"; }
# To stderr: a failure inside $(...) must not vanish into the captured output.
die() { say "FAILED: $*" >&2; exit 1; }

if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
else
  die "neither 'docker compose' nor 'docker-compose' is installed"
fi
docker info >/dev/null 2>&1 || die "no Docker engine is reachable (docker info failed)"
command -v python3 >/dev/null || die "python3 is needed to read the CLI's JSON"

# Unique names, so a smoke run never touches another run's or a person's cluster.
project="ninessmoke$$"
image="nines-smoke:$$"
certs="$(mktemp -d "${TMPDIR:-/tmp}/nines-smoke-certs.XXXXXX")"
export NINES_IMAGE="$image" NINES_PORT_1="" NINES_PORT_2="" NINES_PORT_3="" NINES_CERTS="$certs"
compose() { "${compose_cmd[@]}" -p "$project" -f "$here/docker-compose.yml" "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [[ $rc -ne 0 ]]; then
    say "logs of the failed run (last 40 lines per node):"
    compose logs --no-color --tail 40 2>&1 | sed 's/^/  /'
  fi
  compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
  docker rmi -f "$image" >/dev/null 2>&1
  rm -rf "$certs"
  say "torn down (project $project, image $image)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ---------------------------------------------------------------------------------

# A service's container, by compose's labels (plain docker: quicker and steadier than `compose ps`).
cid() {
  docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" | head -n1
}

# nines CLI inside node $1's container, against the nodes listed in $alive.
alive="n1 n2 n3"
endpoints() { local e=""; for n in $alive; do e="$e${e:+,}$n:7100"; done; echo "$e"; }
cli() {
  local node="$1"; shift
  docker exec "$(cid "$node")" nines --endpoints "$(endpoints)" "$@"
}
first_alive() { set -- $alive; echo "$1"; }

# Read JSON on stdin with a Python expression over `j`; prints its value (or nothing).
jpy() { python3 -c 'import json,sys
try: j = json.load(sys.stdin)
except Exception: sys.exit(1)
v = eval(sys.argv[1])
if v is None or v is False: sys.exit(1)
print(v if not isinstance(v, (dict, list)) else json.dumps(v))' "$1"; }

# "ACTIVE_SU STANDBY_SU EPOCH" once the SI has one confirmed active and one standby.
SETTLED='(lambda a: (lambda act, sb: None if any(x["pending"] for x in a) or len(act) != 1 or len(sb) != 1 else "%s %s %d" % (act[0]["su"], sb[0]["su"], act[0]["epoch"]))([x for x in a if x["ha_state"] == "active"], [x for x in a if x["ha_state"] == "standby"]))(next(s for s in j["sis"] if s["name"] == "counter-si")["assignments"])'

# Wait (bounded) until `cli amf status -o json` satisfies $1 (a jpy expression); print its value.
wait_status() {
  local expr="$1" what="$2" deadline=$((SECONDS + wait_s)) out
  while ((SECONDS < deadline)); do
    if out="$(cli "$(first_alive)" amf status -o json 2>/dev/null | jpy "$expr")"; then
      echo "$out"
      return 0
    fi
    sleep 0.5
  done
  cli "$(first_alive)" amf status >&2 || true
  die "$what: not within ${wait_s}s"
}

su_node() { echo "n${1##*-}"; }   # counter-2 → n2 (model.toml puts counter-N on nN)

# --- build and start -------------------------------------------------------------------------

say "building the image $image"
"$here/image.sh" "$image"
say "making the cluster's certificates (mutual TLS) in $certs"
"$here/certs.sh" "$certs" >/dev/null
say "starting the cluster (compose project $project)"
compose up -d >/dev/null 2>&1 || { compose up -d; die "compose up failed"; }

say "waiting for a leader"
deadline=$((SECONDS + wait_s))
leader=""
while ((SECONDS < deadline)); do
  if leader="$(cli n1 status -o json 2>/dev/null | jpy 'j["leader"] or None')"; then break; fi
  sleep 0.5
done
[[ -n "$leader" ]] || die "no leader within ${wait_s}s"
say "leader is node $leader"

# The published ports answer too (the health service and status are node-local).
# (Informational, so never fatal: `head` closing the pipe early must not fail the run.)
port="$( (docker port "$(cid n1)" 7100 2>/dev/null || true) | head -n1)"
say "n1's client port is published on ${port:-?}"

settled="$(wait_status "$SETTLED" "2N assignment")" || exit 1
read -r active standby epoch <<<"$settled"
say "settled: $active active, $standby standby (epoch $epoch)"
[[ "$active" == counter-1 ]] || die "the best-ranked SU counter-1 should be active, not $active"

# --- drill 1: component kill -----------------------------------------------------------------

node="$(su_node "$active")"
pid="$(cli n1 amf status -o json | jpy "next(c for c in j['components'] if c['su'] == '$active')['pid']")" \
  || die "no pid for $active's component"
say "drill 1: kill -9 the active component (pid $pid in $node's container)"
docker exec "$(cid "$node")" /bin/sh -c "kill -9 $pid"
settled="$(wait_status \
  "(lambda s: s if s and s.split()[0] != '$active' and int(s.split()[2]) > $epoch else None)($SETTLED)" \
  "failover after the component kill")" || exit 1
read -r active2 standby2 epoch2 <<<"$settled"
say "after drill 1: $active2 active, $standby2 standby (epoch $epoch2)"
[[ "$active2" == "$standby" ]] || die "the standby $standby should have become active, not $active2"

# --- drill 2: node kill ----------------------------------------------------------------------

node2="$(su_node "$active2")"
leader="$(cli n1 status -o json 2>/dev/null | jpy 'j["leader"] or None' || echo '?')"
say "drill 2: docker kill $node2 (the active's node; the raft leader is node $leader)"
docker kill "$(cid "$node2")" >/dev/null
alive="$(for n in $alive; do [[ $n == "$node2" ]] || printf '%s ' "$n"; done)"
settled="$(wait_status \
  "(lambda s: s if s and s.split()[0] != '$active2' and int(s.split()[2]) > $epoch2 else None)($SETTLED)" \
  "failover after the node kill")" || exit 1
read -r active3 standby3 epoch3 <<<"$settled"
say "after drill 2: $active3 active, $standby3 standby (epoch $epoch3)"
[[ "$active3" == "$standby2" ]] || die "the standby $standby2 should have become active, not $active3"

# --- the history shows both failovers --------------------------------------------------------

history="$(cli "$(first_alive)" amf history -o json)"
timelines="$(jpy '[e for e in j if "timeline" in e]' <<<"$history")" \
  || die "amf history has no failover timeline: $history"
count="$(jpy 'len(j)' <<<"$timelines")"
((count >= 2)) || die "amf history shows $count failover timelines, expected 2: $history"
jpy '[e for e in j if e["kind"] == "detected"] or None' <<<"$history" >/dev/null \
  || die "amf history has no 'detected' entry: $history"
python3 -c 'import json,sys
for e in json.load(sys.stdin):
    t = e["timeline"]
    print("  failover %-12s %-10s decided after %4d ms, confirmed after %4d ms" % (
        e["entity"], e["kind"], t["decided_after_ms"], t["confirmed_after_ms"]))' <<<"$timelines"

say "PASSED: leader, 2N, component-kill and node-kill failovers (total $((SECONDS - started))s)"
