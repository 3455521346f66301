#!/bin/sh
# log-event.sh: log every lifecycle event as one line.
#
# The event JSON arrives on stdin; the extension also exports the useful fields
# as LAMBDA_* environment variables, so no JSON parser is needed.
#   SHELL_EXT_HANDLER=/opt/scripts/log-event.sh
set -eu

event=$(cat) # read the whole event (a real handler would parse it, e.g. with jq)

echo "log-event: type=${LAMBDA_EVENT_TYPE}" \
	"request_id=${LAMBDA_REQUEST_ID:--}" \
	"deadline_ms=${LAMBDA_DEADLINE_MS:--}" \
	"reason=${LAMBDA_SHUTDOWN_REASON:--}" \
	"bytes=${#event}"
