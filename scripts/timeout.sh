#!/bin/sh
# timeout.sh: sleep past the event's deadline, to see the deadline kill.
#
# At deadlineMs - SHELL_EXT_TIMEOUT_MARGIN_MS (default 100 ms) the extension sends
# SIGTERM to the handler's process group, SIGKILL half a margin later, and reports
# Extension.HandlerTimeout. Raise the margin to give the TERM trap more time.

on_term() {
	echo "timeout.sh: got SIGTERM, cleaning up" >&2
	exit 143
}
trap on_term TERM

cat >/dev/null # drain the event JSON from stdin

echo "timeout.sh: ${LAMBDA_EVENT_TYPE} deadline_ms=${LAMBDA_DEADLINE_MS}, sleeping 600 s"
# Sleep in the background and wait: `wait` returns as soon as a signal arrives,
# so the trap runs at once (a foreground sleep would delay it until sleep ends).
sleep 600 &
wait $!
