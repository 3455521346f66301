#!/usr/bin/env bash
# Instructions and syscalls per event of the per-event HTTP path (docs/http-path.md):
# `InvocationClient::next_event()` in a loop (bench/http-profile, `http-profile-loop`) against
# the raw-TcpStream floor (`bench-floor` without BENCH_HANDLER, bench-driver's `floor-nocmd`),
# both served by `http-profile-api` (the bench driver's responses, byte for byte), and for
# context the official `lambda-extension` crate with no command (`official-peer` without
# BENCH_HANDLER, bench-driver's `official-nocmd` / the issue's "about 2.3x the floor").
#
# Each program runs twice, with N1 and N2 INVOKEs (then SHUTDOWN), under callgrind (instructions)
# and strace -f -c (syscalls); (count(N2) - count(N1)) / (N2 - N1) is the cost of one event, with
# start-up and registration cancelled out. Release code (the musl target the layer ships), built
# in the `profiling` profile: release plus symbols, so the same instruction counts.
#
#   scripts/profile-http.sh                # 500 vs 1000 events
#   N1=200 N2=400 scripts/profile-http.sh
#   ANNOTATE=1 scripts/profile-http.sh     # also callgrind_annotate of the loop (top functions)
#   PROGRAMS="http-profile-loop bench-floor" scripts/profile-http.sh   # without the official crate
#
# Needs valgrind and strace (apt-get install valgrind strace). Output: a table on stdout; the
# callgrind files are kept in $OUT (default target/profile-http).
set -euo pipefail
cd "$(dirname "$0")/.."

N1=${N1:-500}
N2=${N2:-1000}
TARGET=${TARGET:-x86_64-unknown-linux-musl}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/profile-http}
CARGO=${CARGO:-cargo}
PROGRAMS=${PROGRAMS:-http-profile-loop bench-floor official-peer}

for tool in valgrind strace; do
    command -v "$tool" >/dev/null || { echo "profile-http: $tool not found (apt-get install $tool)" >&2; exit 2; }
done

$CARGO build --quiet --profile profiling --target "$TARGET" -p http-profile -p bench \
    --bin http-profile-loop --bin http-profile-api --bin bench-floor
case " $PROGRAMS " in
*" official-peer "*) $CARGO build --quiet --profile profiling --target "$TARGET" -p official-peer ;;
esac
BIN=$TARGET_DIR/$TARGET/profiling
API=$BIN/http-profile-api
mkdir -p "$OUT"

# callgrind's total instruction count for one run of $1 with $2 events.
instructions() {
    local program=$1 events=$2 file=$OUT/callgrind.$1.$2
    "$API" --events "$events" -- valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$BIN/$program" 2>"$OUT/valgrind.$program.$events.log"
    sed -n 's/^summary: *//p; s/^totals: *//p' "$file" | head -n 1
}

# strace's syscall counts for one run: "total name=count ...".
syscalls() {
    local program=$1 events=$2 file=$OUT/strace.$1.$2
    "$API" --events "$events" -- strace -f -c -o "$file" "$BIN/$program" 2>/dev/null
    awk '$NF != "syscall" && $NF != "total" && NF >= 4 && $1 ~ /^[0-9.]+$/ {
             calls = ($4 ~ /^[0-9]+$/) ? $4 : 0; name = $NF; total += calls; list = list " " name "=" calls
         }
         END { print total list }' "$file"
}

# Per-event syscalls by name: the names whose count grows with the events.
per_event_syscalls() {
    local a=$1 b=$2
    awk -v a="$a" -v b="$b" -v n="$((N2 - N1))" 'BEGIN {
        split(a, first, " "); split(b, second, " ")
        for (i = 2; i in first; i++) { split(first[i], kv, "="); before[kv[1]] = kv[2] }
        out = ""
        for (i = 2; i in second; i++) {
            split(second[i], kv, "="); d = (kv[2] - before[kv[1]]) / n
            if (d >= 0.05) out = out sprintf(" %s %.2g,", kv[1], d)
        }
        printf "%.2f (%s)", (second[1] - first[1]) / n, substr(out, 2, length(out) - 2)
    }'
}

printf '%-22s %16s %16s   %s\n' program "instr/event" "syscalls/event" "per-event syscalls"
declare -A per_event
for program in $PROGRAMS; do
    i1=$(instructions "$program" "$N1")
    i2=$(instructions "$program" "$N2")
    s1=$(syscalls "$program" "$N1")
    s2=$(syscalls "$program" "$N2")
    per=$(( (i2 - i1) / (N2 - N1) ))
    per_event[$program]=$per
    sys=$(per_event_syscalls "$s1" "$s2")
    printf '%-22s %16d %16s   %s\n' "$program" "$per" "${sys%% *}" "${sys#* }"
done
floor=${per_event[bench-floor]:-}
if [ -n "$floor" ]; then
    for program in $PROGRAMS; do
        [ "$program" = bench-floor ] && continue
        awk -v name="$program" -v a="${per_event[$program]}" -v b="$floor" -v n1="$N1" -v n2="$N2" \
            'BEGIN { printf "%s / floor: %.2fx instructions per event (%d vs %d; %s vs %s events)\n", name, a / b, a, b, n1, n2 }'
    done
fi

if [ -n "${ANNOTATE:-}" ]; then
    echo
    callgrind_annotate --inclusive=yes "$OUT/callgrind.http-profile-loop.$N2" 2>/dev/null | sed -n '/^Ir/,$p' | head -n 60 | cut -c1-200
fi
