#!/usr/bin/env bash
# Build the nines container image locally, from nothing but this machine's files:
#   deploy/compose/image.sh [TAG]          (default nines:local)
# Env: NINES_PROFILE=release|debug (default release) picks the cargo profile; NINES_SKIP_BUILD=1
# uses the binaries already in target/ (CI reuses the test build's debug binaries).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
tag="${1:-nines:local}"
profile="${NINES_PROFILE:-release}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$profile" in
  release) bin_dir="$target_dir/release"; cargo_profile=release ;;
  debug) bin_dir="$target_dir/debug"; cargo_profile=dev ;;
  *) echo "image.sh: NINES_PROFILE must be release or debug, not '$profile'" >&2; exit 2 ;;
esac

if [[ "${NINES_SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$repo" && cargo build --profile "$cargo_profile" -p nines-cli -p nines-example-counter)
fi
for b in nines nines-counter; do
  [[ -x "$bin_dir/$b" ]] || { echo "image.sh: $bin_dir/$b is missing; build it first" >&2; exit 1; }
done

ctx="$(mktemp -d "${TMPDIR:-/tmp}/nines-image.XXXXXX")"
trap 'rm -rf "$ctx" "$ctx.log"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/etc/nines" "$root/var/lib/nines" "$root/tmp"
chmod 1777 "$root/tmp"
for b in nines nines-counter; do
  # Debug info is most of a debug build's size; the image needs none of it.
  strip -o "$root/usr/local/bin/$b" "$bin_dir/$b" 2>/dev/null || cp "$bin_dir/$b" "$root/usr/local/bin/$b"
done
cp -L /bin/sh "$root/bin/sh"
# Every shared library the three programs need, at the path the dynamic loader looks for it.
for b in "$root/usr/local/bin/nines" "$root/usr/local/bin/nines-counter" "$root/bin/sh"; do
  ldd "$b" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
cp "$repo/deploy/compose/Dockerfile" "$ctx/Dockerfile"
# The classic builder (no buildx here) prints a deprecation notice: show its output only on failure.
docker build --quiet -t "$tag" "$ctx" >"$ctx.log" 2>&1 || { cat "$ctx.log" >&2; exit 1; }
echo "image.sh: built $tag ($(du -sh "$root" | cut -f1) from $bin_dir)"
