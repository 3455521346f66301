#!/bin/bash
# A persistent handler (SHELL_EXT_MODE=persistent): started once, it reads one event per line
# on stdin and acknowledges each on fd 3 (LAMBDA_ACK_FD) with `ok` or `error <message>`.
# Its stdout and stderr go to the function's log, as in per-event mode.
#
# bash's `read` takes one system call per byte of the line: fine for a few events a second;
# for thousands, see persistent-handler.py.
while IFS= read -r event; do
	case "$event" in
	*'"eventType":"SHUTDOWN"'*) echo "shutdown: $event" ;;
	*) echo "event: $event" ;;
	esac
	echo ok >&3
done
# stdin reaches end of file after SHUTDOWN has been acknowledged: finish and exit.
echo "persistent handler done"
