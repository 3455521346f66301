#!/bin/sh
# telemetry-to-file.sh: append every telemetry batch to a JSON Lines file, one batch per line.
#
#   SHELL_EXT_TELEMETRY_HANDLER=/opt/scripts/telemetry-to-file.sh
#   TELEMETRY_FILE=/tmp/telemetry.jsonl   (the default; on Lambda only /tmp is writable)
#
# Each batch arrives on stdin exactly as Lambda POSTed it: a JSON array of
# {"time", "type", "record"} objects, with no trailing newline; `echo` ends the line.
# LAMBDA_TELEMETRY_BATCH_ITEMS holds the number of records in the batch. The extension runs one
# batch at a time, in arrival order, so lines never interleave.
set -eu

{ cat; echo; } >>"${TELEMETRY_FILE:-/tmp/telemetry.jsonl}"
