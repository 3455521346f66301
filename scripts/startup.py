#!/usr/bin/env python3
"""Start-up time of extension binaries: spawn -> registration request arriving, on loopback.

    scripts/startup.py [--rounds N] [--instructions] BINARY [BINARY ...]

Each binary is started the way Lambda does (no arguments, env vars only, from an
opt/extensions/ folder); the moment its POST /extension/register has fully arrived is taken,
then it is answered 403 so it exits. Binaries are interleaved round by round (A B C A B C ...)
so machine noise hits them alike; medians are printed, with the ratio to the first binary.
With --instructions, each binary also runs once under valgrind's callgrind, which counts the
instructions it executes from exec to exit (after the 403): a figure that noise cannot move.
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time


def one_start(path: str, server: socket.socket, env: dict, wrapper=()) -> float:
    start = time.perf_counter()
    process = subprocess.Popen([*wrapper, path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    connection, _ = server.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        body += connection.recv(4096)
    elapsed = time.perf_counter() - start
    answer = b'{"errorMessage":"benchmark","errorType":"Extension.Benchmark"}'
    connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer))
    connection.close()
    process.wait(timeout=10)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("binaries", nargs="+")
    args = parser.parse_args()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % server.getsockname()[1],
        "SHELL_EXT_HANDLER": "true",
        "RUST_LOG": "off",
    }
    with tempfile.TemporaryDirectory() as root:
        installed = []
        for index, binary in enumerate(args.binaries):
            folder = os.path.join(root, str(index), "opt", "extensions")
            os.makedirs(folder)
            path = os.path.join(folder, "lambda-shell-extension")
            shutil.copy2(binary, path)
            installed.append(path)
        times = {path: [] for path in installed}
        for path in installed:  # warm the page cache
            one_start(path, server, env)
        for _ in range(args.rounds):
            for path in installed:
                times[path].append(one_start(path, server, env))
        instructions = {path: count_instructions(path, server, env) if args.instructions else 0 for path in installed}
    base = statistics.median(times[installed[0]])
    print("%-60s %10s %10s %8s %14s" % ("binary", "median", "p90", "ratio", "instructions"))
    for binary, path in zip(args.binaries, installed):
        samples = sorted(times[path])
        median = statistics.median(samples)
        p90 = samples[int(len(samples) * 0.9)]
        print("%-60s %8.0f µs %7.0f µs %7.2fx %14d" % (binary, median * 1e6, p90 * 1e6, median / base, instructions[path]))


def count_instructions(path: str, server: socket.socket, env: dict) -> int:
    with tempfile.NamedTemporaryFile() as log:
        wrapper = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--log-file=" + log.name)
        one_start(path, server, env, wrapper)
        found = re.search(rb"Collected : (\d+)", open(log.name, "rb").read())
        return int(found.group(1)) if found else 0


if __name__ == "__main__":
    main()
