#!/usr/bin/env python3
"""Packs the extension binary and the proxy wrapper into a Lambda layer zip, reproducibly.

    scripts/layer-zip.py BINARY ZIP

The zip holds two entries, in this order, both mode 0755 with a fixed timestamp, so the same
inputs always give the same zip bytes:

  extensions/lambda-shell-extension   BINARY (Lambda starts every file in /opt/extensions)
  bin/lambda-shell-extension-proxy    layer/bin/lambda-shell-extension-proxy of this repository,
                                      the exec wrapper for the Runtime API proxy
                                      (AWS_LAMBDA_EXEC_WRAPPER=/opt/bin/lambda-shell-extension-proxy)

The wrapper is not under extensions/: Lambda would start it as an extension.
"""
import sys
import zipfile
from pathlib import Path

BINARY_ENTRY = "extensions/lambda-shell-extension"
WRAPPER_ENTRY = "bin/lambda-shell-extension-proxy"
WRAPPER_FILE = Path(__file__).resolve().parent.parent / "layer" / "bin" / "lambda-shell-extension-proxy"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold


def entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.create_system = 3  # Unix, so the mode below is honoured
    info.external_attr = 0o100755 << 16  # regular file, rwxr-xr-x
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    binary, target = sys.argv[1], sys.argv[2]
    with open(binary, "rb") as f:
        data = f.read()
    wrapper = WRAPPER_FILE.read_bytes()
    # A wrapper saved with CRLF line endings would name the interpreter `/bin/sh\r`, which does
    # not exist: every runtime start would fail. Refuse to pack it.
    if not wrapper.startswith(b"#!/bin/sh\n") or b"\r" in wrapper:
        print(
            f"layer-zip.py: {WRAPPER_FILE} must start with '#!/bin/sh' and have LF line endings",
            file=sys.stderr,
        )
        return 1
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr(entry(BINARY_ENTRY), data, compresslevel=9)
        archive.writestr(entry(WRAPPER_ENTRY), wrapper, compresslevel=9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
