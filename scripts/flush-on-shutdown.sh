#!/bin/sh
# flush-on-shutdown.sh: do nothing per invoke, do the work once at SHUTDOWN.
#
# Best registered for SHUTDOWN only, so Lambda never waits for it during invokes:
#   SHELL_EXT_EVENTS=SHUTDOWN SHELL_EXT_HANDLER=/opt/scripts/flush-on-shutdown.sh
# You have until deadlineMs (about 2 s after the SHUTDOWN event on Lambda).
set -eu

cat >/dev/null # drain the event JSON from stdin

# If also registered for INVOKE, ignore those events.
[ "${LAMBDA_EVENT_TYPE}" = SHUTDOWN ] || exit 0

echo "flush-on-shutdown: shutdown reason=${LAMBDA_SHUTDOWN_REASON:-unknown}" \
	"deadline_ms=${LAMBDA_DEADLINE_MS:-0}"
# Real work goes here, e.g. upload a buffer written by your function:
#   [ -s /tmp/buffer ] && curl -fsS --data-binary @/tmp/buffer "$SINK_URL"
echo "flush-on-shutdown: flushed"
