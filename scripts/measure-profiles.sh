#!/usr/bin/env bash
# How the release profile was chosen: builds the x86_64 static binary at each opt-level and
# prints its size and its start-up (spawn -> registration request, interleaved, medians, and
# instructions counted by callgrind). [profile.release.package.ureq] stays at "s" in every build.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
binaries=()
for level in 3 2 s z; do
	dir=target/profiles/opt-$level
	CARGO_PROFILE_RELEASE_OPT_LEVEL=$level CARGO_TARGET_DIR=$dir \
		cargo build --quiet --release --bin lambda-shell-extension --target $target
	binary=$dir/$target/release/lambda-shell-extension
	printf 'opt-level=%s  %8d bytes\n' "$level" "$(stat -c %s "$binary")"
	binaries+=("$binary")
done
python3 scripts/startup.py --instructions --rounds "${ROUNDS:-200}" "${binaries[@]}"
