#!/bin/sh
# audit-requests.sh: an audit log of the function's requests and responses, one JSON line each.
#
#   SHELL_EXT_REQUEST_HANDLER=/opt/scripts/audit-requests.sh    # every invocation's payload
#   SHELL_EXT_RESPONSE_HANDLER=/opt/scripts/audit-requests.sh   # every response or error
#   AWS_LAMBDA_EXEC_WRAPPER=/opt/bin/lambda-shell-extension-proxy
#
# The same script serves both: the proxy sets LAMBDA_EVENT_TYPE=REQUEST or RESPONSE and passes
# the body on stdin. Each run appends one line to AUDIT_FILE (default /tmp/audit.jsonl; on Lambda
# only /tmp is writable and it goes with the environment: AUDIT_FILE=/dev/stdout puts the lines
# in the function's CloudWatch log instead):
#
#   {"time":"2026-12-02T10:00:00.123Z","type":"request","requestId":"8476a536-…","deadlineMs":1764669603000,"bytes":42,"sha256":"9f86d0…"}
#   {"time":"2026-12-02T10:00:00.210Z","type":"response","requestId":"8476a536-…","status":"success","bytes":17,"sha256":"…"}
#   {"time":"…","type":"response","requestId":"…","status":"error","errorType":"Runtime.HandledError","bytes":96,"sha256":"…"}
#
# AUDIT_BODY chooses what is kept of the body:
#   sha256  (default) its size and SHA-256: a record of what was asked and answered that can be
#           matched against a copy, without putting the payload (personal data?) in the log
#   size    its size only (the cheapest: no temporary file, no hash)
#   base64  size, SHA-256 and the whole body as "bodyBase64" (debugging; the log gets every
#           byte, and CloudWatch splits events over 256 KiB)
# A response past the proxy's bound (6 MiB) has "truncated":true: size and hash are those of
# its first 6 MiB.
#
# With arguments it audits, then runs them as a command with the body on stdin and exits with
# the command's status, which the record keeps as "commandExit". That is how a request is both
# logged and checked, rejected ones included (SHELL_EXT_ON_REQUEST_FAILURE=reject):
#   SHELL_EXT_REQUEST_HANDLER='/opt/scripts/audit-requests.sh /opt/scripts/validate-request.sh'
# The command's stderr passes through (it is the reject message); this script itself prints
# nothing but failures.
#
# A record that cannot be written (a full /tmp, a bad AUDIT_FILE) fails the run: logged with the
# default SHELL_EXT_ON_REQUEST_FAILURE=log; with `reject` the request is rejected, so an audit
# that cannot record lets nothing through unrecorded.
#
# Tools: POSIX sh plus cat, wc, date, mktemp, sha256sum and base64 (coreutils), and sed and tr for
# the rare value that needs JSON escaping, all on every Amazon Linux 2023 and Amazon Linux 2
# image. Each run costs a few milliseconds (one process per tool); a request handler's time is
# part of the invocation's. The extension runs request and response handlers one at a time, so
# lines never interleave.
set -eu

file=${AUDIT_FILE:-/tmp/audit.jsonl}
mode=${AUDIT_BODY:-sha256}
case $mode in
size | sha256 | base64) ;;
*)
	echo "audit-requests.sh: AUDIT_BODY=$mode: expected size, sha256 or base64" >&2
	exit 2
	;;
esac

# json VALUE: VALUE as a JSON string. Lambda's ids, ARNs and trace headers need no escaping; for
# anything else (an error type is whatever the runtime sent) escape \ and " and drop control
# characters.
json() {
	case $1 in
	*[!A-Za-z0-9._:=/+@,\;-]*)
		printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\000-\037')"
		;;
	*) printf '"%s"' "$1" ;;
	esac
}

# Milliseconds where date knows %N (GNU coreutils), whole seconds elsewhere.
now=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
case $now in
*N*) now=$(date -u +%Y-%m-%dT%H:%M:%SZ) ;;
esac

case ${LAMBDA_EVENT_TYPE:-} in
REQUEST) line="{\"time\":\"$now\",\"type\":\"request\"" ;;
RESPONSE) line="{\"time\":\"$now\",\"type\":\"response\"" ;;
*) line="{\"time\":\"$now\",\"type\":$(json "${LAMBDA_EVENT_TYPE:-unknown}")" ;;
esac
line="$line,\"requestId\":$(json "${LAMBDA_REQUEST_ID:-}")"
case ${LAMBDA_DEADLINE_MS:-} in
'' | *[!0-9]*) ;;
*) line="$line,\"deadlineMs\":$LAMBDA_DEADLINE_MS" ;;
esac
if [ -n "${_X_AMZN_TRACE_ID:-}" ]; then
	line="$line,\"traceId\":$(json "$_X_AMZN_TRACE_ID")"
fi
if [ -n "${LAMBDA_RESPONSE_STATUS:-}" ]; then
	line="$line,\"status\":$(json "$LAMBDA_RESPONSE_STATUS")"
fi
if [ -n "${LAMBDA_ERROR_TYPE:-}" ]; then
	line="$line,\"errorType\":$(json "$LAMBDA_ERROR_TYPE")"
fi
if [ "${LAMBDA_RESPONSE_TRUNCATED:-}" = 1 ]; then
	line="$line,\"truncated\":true"
fi

if [ "$mode" = size ] && [ "$#" -eq 0 ]; then
	# The body is read once, straight into wc.
	bytes=$(wc -c)
	printf '%s,"bytes":%d}\n' "$line" "$bytes" >>"$file"
	exit 0
fi

# Keep the body in a temporary file: it is read more than once (size, hash, copy, command).
body=$(mktemp "${TMPDIR:-/tmp}/audit-requests.XXXXXX")
trap 'rm -f "$body"' EXIT
cat >"$body"
bytes=$(wc -c <"$body")
line=$(printf '%s,"bytes":%d' "$line" "$bytes")
if [ "$mode" != size ]; then
	sum=$(sha256sum <"$body")
	line="$line,\"sha256\":\"${sum%% *}\""
fi

status=0
if [ "$#" -gt 0 ]; then
	"$@" <"$body" || status=$?
	line="$line,\"commandExit\":$status"
fi

if [ "$mode" = base64 ]; then
	# Streamed into the file, not built in memory: a body may be megabytes.
	{
		printf '%s,"bodyBase64":"' "$line"
		base64 -w 0 <"$body"
		printf '"}\n'
	} >>"$file"
else
	printf '%s}\n' "$line" >>"$file"
fi
exit "$status"
