#!/usr/bin/env python3
"""Hostile connections for benches/soak.sh: silent ones and a slowloris, kept up for a while.

    soak_attack.py HOST PORT --silent 2000 --slowloris 200 --seconds 60 [--drip 2]

Silent connections send nothing. Slowloris connections send the start of a request head, then one
more header line every --drip seconds, and never finish it. Each side keeps its count of open
connections for --seconds, opening a new one whenever the server closes one. At the end it prints
one line of figures (key=value): connections opened, closed by the server, how long the server took
to close them (median, max), the most open at once, and connect errors.

Standard library only; everything is bounded by --seconds (plus the time to close at the end).
"""

import argparse
import asyncio
import resource
import statistics
import time


class Side:
    def __init__(self, name):
        self.name = name
        self.opened = 0
        self.closed_by_server = 0
        self.lifetimes = []
        self.open_now = 0
        self.peak_open = 0
        self.connect_errors = 0

    def report(self):
        lifetimes = sorted(self.lifetimes)
        median = statistics.median(lifetimes) if lifetimes else 0.0
        longest = lifetimes[-1] if lifetimes else 0.0
        return (
            f"{self.name}_opened={self.opened} {self.name}_closed_by_server={self.closed_by_server} "
            f"{self.name}_close_median_s={median:.2f} {self.name}_close_max_s={longest:.2f} "
            f"{self.name}_peak_open={self.peak_open} {self.name}_connect_errors={self.connect_errors}"
        )


async def one(host, port, side, deadline, drip):
    """One connection slot: reconnect each time the server closes, until the deadline."""
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, asyncio.TimeoutError):
            side.connect_errors += 1
            await asyncio.sleep(0.2)
            continue
        side.opened += 1
        side.open_now += 1
        side.peak_open = max(side.peak_open, side.open_now)
        start = time.monotonic()
        closed = False
        try:
            if drip is None:
                # Silent: wait for the server to close (EOF or reset), or for the deadline.
                left = deadline - time.monotonic()
                if left > 0:
                    try:
                        data = await asyncio.wait_for(reader.read(1024), left)
                        closed = data == b""
                    except asyncio.TimeoutError:
                        pass
            else:
                writer.write(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n")
                n = 0
                while time.monotonic() < deadline:
                    try:
                        data = await asyncio.wait_for(reader.read(1024), drip)
                        if data == b"":
                            closed = True
                            break
                    except asyncio.TimeoutError:
                        pass
                    n += 1
                    writer.write(b"X-Slow-%d: x\r\n" % n)
                    await writer.drain()
        except (ConnectionError, OSError):
            closed = True
        side.open_now -= 1
        if closed:
            side.closed_by_server += 1
            side.lifetimes.append(time.monotonic() - start)
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--silent", type=int, default=2000)
    ap.add_argument("--slowloris", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--drip", type=float, default=2)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.silent + args.slowloris + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    silent, slow = Side("silent"), Side("slowloris")
    deadline = time.monotonic() + args.seconds
    tasks = [one(args.host, args.port, silent, deadline, None) for _ in range(args.silent)]
    tasks += [one(args.host, args.port, slow, deadline, args.drip) for _ in range(args.slowloris)]
    await asyncio.gather(*tasks)
    print(silent.report(), slow.report(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
