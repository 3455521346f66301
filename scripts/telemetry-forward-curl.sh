#!/bin/sh
# telemetry-forward-curl.sh: POST every telemetry batch to an HTTP collector.
#
#   SHELL_EXT_TELEMETRY_HANDLER=/opt/scripts/telemetry-forward-curl.sh
#   TELEMETRY_URL=https://collector.example.com/lambda   (required)
#   TELEMETRY_AUTH="Bearer …"                           (optional Authorization header)
#
# The batch (a JSON array, exactly as Lambda sent it) goes to curl on stdin. A non-zero exit
# (curl could not deliver, or the collector answered >= 400) is logged by the extension with
# curl's stderr; the extension carries on with the next batch. curl is not in every Lambda
# runtime: ship a static build in a layer (/opt/bin/curl) if `command -v curl` finds none.
set -eu

: "${TELEMETRY_URL:?set TELEMETRY_URL to the collector's URL}"
if [ -n "${TELEMETRY_AUTH:-}" ]; then
	exec curl --silent --show-error --fail --max-time 10 \
		-H 'Content-Type: application/json' -H "Authorization: $TELEMETRY_AUTH" \
		--data-binary @- "$TELEMETRY_URL"
fi
exec curl --silent --show-error --fail --max-time 10 \
	-H 'Content-Type: application/json' --data-binary @- "$TELEMETRY_URL"
