#!/bin/sh
# validate-request.sh: reject invocations whose payload is not a JSON object with a given field.
#
#   SHELL_EXT_REQUEST_HANDLER=/opt/scripts/validate-request.sh
#   SHELL_EXT_ON_REQUEST_FAILURE=reject
#   AWS_LAMBDA_EXEC_WRAPPER=/opt/bin/lambda-shell-extension-proxy
#   VALIDATE_REQUIRED_FIELD=orderId          (default: id)
#
# The payload arrives on stdin exactly as the caller sent it. Valid: exit 0, print nothing.
# Invalid: exit 1 with one line on stderr saying why; with SHELL_EXT_ON_REQUEST_FAILURE=reject the
# function never sees the invocation and the caller gets an Extension.RequestRejected error
# whose message ends with that line, for example
#   validate-request.sh: rejected: the payload has no field "id"
# (with the default `log` the line is only logged and the invocation goes on).
#
# A ROUGH check, on purpose: Lambda's runtimes have no jq, and python3 only in some, so this is
# POSIX sh, tr and grep. What it checks, after joining the payload's lines:
#   - the payload starts with `{` and ends with `}` (surrounding whitespace ignored);
#   - somewhere after a `{` or a `,` comes "FIELD" then `:` (whitespace allowed around).
# What it does not check:
#   - that the payload is valid JSON at all (`{"id": }` passes);
#   - where the field is: one in a nested object or array (`{"user":{"id":1}}`) counts too
#     (text inside a string value does not: its quotes are escaped, `\"id\"`);
#   - the field's value (null, "" and [] are fine);
#   - field names written with JSON escapes (`"\u0069d"` is `id` to a parser, not to this);
#   - NUL bytes (they become spaces before the check).
# For a real schema check ship a validator in a layer (a static jq in /opt/bin, say) and call it
# the same way: exit status and one stderr line are the whole contract.
set -eu

field=${VALIDATE_REQUIRED_FIELD:-id}
case $field in
*[\"\\]* | *"
"*)
	# A name with a quote, a backslash or a line break cannot be matched literally here.
	echo "validate-request.sh: VALIDATE_REQUIRED_FIELD=$field: the name must not contain a quote, a backslash or a line break" >&2
	exit 2
	;;
*[!A-Za-z0-9_-]*)
	# Characters that mean something to grep -E are escaped to stand for themselves.
	pattern=$(printf '%s' "$field" | sed 's/[][\.*^$+?(){}|/]/\\&/g')
	;;
*) pattern=$field ;;
esac

# One line: line breaks and tabs become spaces (JSON allows them between tokens), and so do
# NULs (a shell variable cannot hold them).
payload=$(tr '\n\r\t\000' '    ')

# Two greps only on failure: a valid payload costs one tr pipeline and one grep.
if printf '%s\n' "$payload" |
	grep -Eq "^[[:space:]]*\{(.*[{,])?[[:space:]]*\"$pattern\"[[:space:]]*:.*\}[[:space:]]*\$"; then
	exit 0
fi
if ! printf '%s\n' "$payload" | grep -Eq '^[[:space:]]*\{.*\}[[:space:]]*$'; then
	case $payload in
	*[![:space:]]*) echo "validate-request.sh: rejected: the payload is not a JSON object" >&2 ;;
	*) echo "validate-request.sh: rejected: the payload is empty, not a JSON object" >&2 ;;
	esac
	exit 1
fi
echo "validate-request.sh: rejected: the payload has no field \"$field\"" >&2
exit 1
