#!/usr/bin/env python3
"""Slow-header clients against a server, with /healthz probes alongside.

Opens CONNECTIONS connections spread round-robin over SOURCES source
addresses (127.0.0.2, 127.0.0.3, ...), each sending a request head one
header line per second and never finishing it; a connection the server
closes is opened again after a second, as an attacker would. Meanwhile
/healthz is probed from 127.0.0.1 at RATE per second for DURATION seconds,
each probe on a new connection with a 2 s limit. Prints the probes'
success rate and latency percentiles, and what happened to the attackers.

Used by scripts/bench-slow-clients.sh; standard library only.
"""

import argparse
import asyncio
import socket
import time

PROBE_LIMIT_S = 2.0


class Tally:
    def __init__(self):
        self.opened = 0
        self.connect_failed = 0
        self.closed_by_server = 0
        self.closed_at_once = 0  # closed before the first trickled line


async def attacker(host, port, source, tally, stop):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            tally.connect_failed += 1
            await asyncio.sleep(1.0)
            continue
        tally.opened += 1
        lines = 0
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n")
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(1024), timeout=1.0)
                    if not data:
                        break
                except asyncio.TimeoutError:
                    pass
                writer.write(b"x-slow: %d\r\n" % lines)
                await writer.drain()
                lines += 1
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
        if not stop.is_set():
            tally.closed_by_server += 1
            if lines == 0:
                tally.closed_at_once += 1
            await asyncio.sleep(1.0)


async def probe(host, port, results):
    start = time.monotonic()
    ok = False
    try:
        async def once():
            reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.1", 0))
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return answer

        answer = await asyncio.wait_for(once(), timeout=PROBE_LIMIT_S)
        ok = answer.startswith(b"HTTP/1.1 200")
    except (asyncio.TimeoutError, OSError):
        ok = False
    results.append((ok, time.monotonic() - start))


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--sources", type=int, default=19, help="source addresses 127.0.0.2 onwards")
    parser.add_argument("--rate", type=float, default=10.0, help="probes per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of probing")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of attack before probing")
    args = parser.parse_args()

    tally, stop = Tally(), asyncio.Event()
    sources = ["127.0.0.%d" % (2 + i) for i in range(args.sources)]
    attackers = []
    for i in range(args.connections):
        attackers.append(asyncio.create_task(attacker(args.host, args.port, sources[i % len(sources)], tally, stop)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.sleep(args.warmup)

    results, probes = [], []
    interval = 1.0 / args.rate
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < args.duration:
        probes.append(asyncio.create_task(probe(args.host, args.port, results)))
        n += 1
        await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
    await asyncio.gather(*probes)
    stop.set()
    for task in attackers:
        task.cancel()
    await asyncio.gather(*attackers, return_exceptions=True)

    ok = [lat for good, lat in results if good]
    print(f"probes: {len(ok)}/{len(results)} answered 200 within {PROBE_LIMIT_S:.0f} s ({100.0 * len(ok) / max(1, len(results)):.1f} %)")
    print(f"probe latency of the successes: p50 {1000 * percentile(ok, 50):.1f} ms, p99 {1000 * percentile(ok, 99):.1f} ms")
    print(
        f"attackers: {args.connections} from {len(sources)} addresses; {tally.opened} connections opened, "
        f"{tally.closed_by_server} closed by the server ({tally.closed_at_once} before their first header line), "
        f"{tally.connect_failed} connects failed"
    )


if __name__ == "__main__":
    asyncio.run(main())
