#!/usr/bin/env python3
"""A persistent handler (SHELL_EXT_MODE=persistent) in Python.

Started once, it reads one event per line on stdin and acknowledges each on fd 3
(LAMBDA_ACK_FD) with `ok` or `error <message>`. Its stdout and stderr go to the log.
"""
import json
import os
import sys

ack = os.fdopen(int(os.environ.get("LAMBDA_ACK_FD", "3")), "w", buffering=1)


def handle(event):
    if event["eventType"] == "INVOKE":
        print(f"invoke {event['requestId']}", flush=True)
    else:
        print(f"shutdown: {event['shutdownReason']}", flush=True)


for line in sys.stdin:
    try:
        handle(json.loads(line))
        ack.write("ok\n")
    except Exception as error:  # one line: the message is the rest of the ack line
        ack.write("error " + " ".join(str(error).split()) + "\n")
# stdin reaches end of file after SHUTDOWN has been acknowledged: finish and exit.
