#!/bin/sh
# fail.sh: always fail, to see how failures are reported.
#
# With SHELL_EXT_ON_ERROR=exit (default) the extension posts exit/error with
# type Extension.HandlerFailed (errorMessage has "status 3" and the stderr tail)
# and exits 1; with SHELL_EXT_ON_ERROR=continue it logs and waits for the next event.

cat >/dev/null # drain the event JSON from stdin

echo "fail.sh: cannot handle ${LAMBDA_EVENT_TYPE} ${LAMBDA_REQUEST_ID:-}: something went wrong" >&2
exit 3
