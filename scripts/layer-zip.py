#!/usr/bin/env python3
"""Packs the extension binary into a Lambda layer zip, reproducibly.

    scripts/layer-zip.py BINARY ZIP

The zip holds one entry, extensions/lambda-shell-extension, mode 0755 (Lambda starts every file
in /opt/extensions), with a fixed timestamp, so the same binary always gives the same zip bytes.
"""
import sys
import zipfile

ENTRY = "extensions/lambda-shell-extension"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    binary, target = sys.argv[1], sys.argv[2]
    with open(binary, "rb") as f:
        data = f.read()
    info = zipfile.ZipInfo(ENTRY, date_time=FIXED_TIME)
    info.create_system = 3  # Unix, so the mode below is honoured
    info.external_attr = (0o100755 << 16)  # regular file, rwxr-xr-x
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr(info, data, compresslevel=9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
