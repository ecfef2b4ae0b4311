#!/usr/bin/env bash
# Runs `resizer resize` on every hostile input that make.py generates and prints a table:
# file, exit code, error message, wall seconds, max RSS MiB, verdict.
#
#   bench/hostile/run.sh                 # generate into a temp dir, run, print, clean up
#   bench/hostile/run.sh -k              # keep the temp dir (its path is printed)
#   bench/hostile/run.sh -f 'jpeg_*'     # only files matching a glob
#   RESIZER=/path/to/resizer bench/hostile/run.sh
#
# PASS needs all three:
#   - a typed outcome: exit 0 (decoded within the limits), or exit 1 with a message ending in a
#     4xx status ("... (HTTP 4xx)"). A signal, an abort, a panic (exit 101), a 500 (our bug), a
#     timeout, or an expected-`reject` file that converts, is FAIL;
#   - wall time <= MAX_SECONDS (default 2);
#   - max RSS <= MAX_RSS_MIB (default 256).
# Exit status: 0 if every file passed, 1 otherwise.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${RESIZER:-$ROOT/target/release/resizer}
MAX_SECONDS=${MAX_SECONDS:-2}
MAX_RSS_MIB=${MAX_RSS_MIB:-256}
HARD_TIMEOUT=${HARD_TIMEOUT:-30}
KEEP=0
FILTER='*'
while getopts "kf:" opt; do
  case $opt in
    k) KEEP=1 ;;
    f) FILTER=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done

if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (Debian package 'time')" >&2
  apt-get install -y -qq time >/dev/null || { echo "need /usr/bin/time" >&2; exit 2; }
fi
if [ ! -x "$BIN" ]; then
  echo "building $BIN" >&2
  (cd "$ROOT" && cargo build --release -p resizer) || exit 2
fi
python3 -c 'import PIL' 2>/dev/null || { echo "make.py needs Pillow: pip install pillow" >&2; exit 2; }

WORK=$(mktemp -d -t resizer-hostile.XXXXXX)
if [ "$KEEP" = 1 ]; then echo "keeping $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi
mkdir -p "$WORK/in" "$WORK/out"
echo "generating inputs into $WORK/in ..." >&2
python3 "$HERE/make.py" "$WORK/in" >"$WORK/manifest.tsv" || { echo "make.py failed" >&2; exit 2; }

printf '%-46s %4s %6s %7s %-7s %s\n' FILE EXIT SECS RSS_MiB VERDICT MESSAGE
fails=0 total=0
while IFS=$'\t' read -r name category expect desc output; do
  # shellcheck disable=SC2254
  case $name in $FILTER) ;; *) continue ;; esac
  total=$((total + 1))
  # The output's extension picks its format: jpg unless the manifest says (webp and gif keep
  # an animation: the frame-by-frame path).
  out="$WORK/out/out.${output:-jpg}"
  rm -f "$out"
  # time(1) over timeout(1): wait4 reports the max RSS of the whole tree, i.e. of resizer.
  /usr/bin/time -f '%e %M' -o "$WORK/time" \
    timeout -s KILL "$HARD_TIMEOUT" "$BIN" resize "$WORK/in/$name" -o "$out" \
    --width 512 --height 512 >/dev/null 2>"$WORK/stderr"
  rc=$?
  # time's own "Command exited with non-zero status" / "terminated by signal" lines come first.
  read -r secs kib < <(tail -n 1 "$WORK/time")
  signal=$(grep -o 'terminated by signal [0-9]*' "$WORK/time" | grep -o '[0-9]*$')
  mib=$(( (${kib:-0} + 1023) / 1024 ))
  msg=$(grep -v '^$' "$WORK/stderr" | tail -n 1)
  msg=${msg/"error: $WORK/in/$name: "/}
  reasons=()
  if [ "$rc" -eq 124 ] || { [ "${signal:-}" = 9 ] &&
      awk -v s="${secs:-0}" -v t="$HARD_TIMEOUT" 'BEGIN { exit !(s >= t - 0.5) }'; }; then
    reasons+=("killed after ${HARD_TIMEOUT}s")
  elif [ -n "$signal" ]; then
    reasons+=("signal $signal")
  elif [ "$rc" -eq 101 ]; then
    reasons+=("panic")
  elif [ "$rc" -eq 1 ]; then
    if ! [[ $msg =~ \(HTTP\ 4[0-9][0-9]\)$ ]]; then reasons+=("not a typed 4xx error"); fi
  elif [ "$rc" -eq 0 ]; then
    if [ "$expect" = reject ]; then reasons+=("converted, expected a rejection"); fi
    msg="ok: $msg"
  else
    reasons+=("exit $rc")
  fi
  if [ "$expect" = ok ] && [ "$rc" -ne 0 ]; then reasons+=("valid image refused"); fi
  if awk -v s="${secs:-999}" -v m="$MAX_SECONDS" 'BEGIN { exit !(s > m) }'; then reasons+=("slow"); fi
  if [ "$mib" -gt "$MAX_RSS_MIB" ]; then reasons+=("RSS"); fi
  if [ ${#reasons[@]} -eq 0 ]; then
    verdict=PASS
  else
    verdict=FAIL
    fails=$((fails + 1))
    msg="[$(IFS=,; echo "${reasons[*]}")] $msg"
  fi
  printf '%-46s %4s %6s %7s %-7s %s\n' "$name" "$rc" "$secs" "$mib" "$verdict" "${msg:0:150}"
done <"$WORK/manifest.tsv"

echo
echo "$((total - fails))/$total passed (limits: ${MAX_SECONDS}s wall, ${MAX_RSS_MIB} MiB RSS; binary: $BIN)"
[ "$fails" -eq 0 ]
