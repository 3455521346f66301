#!/bin/sh
# append-jsonl.sh: append every event to a JSON Lines file, one event per line.
#
# The event JSON arrives on stdin without a trailing newline (the exact bytes Lambda sent), so a
# bare `cat >> file` would glue the events together (`}{`); `echo` ends each line. The file is
# /tmp/events.jsonl unless EVENTS_FILE is set (on Lambda only /tmp is writable):
#   SHELL_EXT_HANDLER=/opt/scripts/append-jsonl.sh EVENTS_FILE=/tmp/lifecycle.jsonl
# The extension runs one handler at a time, so lines from one extension never interleave.
set -eu

{ cat; echo; } >>"${EVENTS_FILE:-/tmp/events.jsonl}"
