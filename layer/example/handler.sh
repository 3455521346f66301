#!/bin/sh
# Run by lambda-shell-extension for every INVOKE and SHUTDOWN event of the example function
# (SHELL_EXT_HANDLER=/var/task/handler.sh). The event JSON is on stdin; whatever this prints
# goes to the function's CloudWatch log. Keep INVOKE work short: it is billed and counts
# against the function timeout.
event=$(cat)
case "$LAMBDA_EVENT_TYPE" in
  INVOKE)
    echo "handler.sh: INVOKE $LAMBDA_REQUEST_ID (deadline $LAMBDA_DEADLINE_MS)"
    ;;
  SHUTDOWN)
    echo "handler.sh: SHUTDOWN ($LAMBDA_SHUTDOWN_REASON): $event"
    ;;
esac
