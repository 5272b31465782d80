"""The 200-phone burst of ``sync_bench.py`` alone, several rounds in a row, to find where its time
goes: faster to repeat than the whole bench, and with the profilers this machine has at hand.

    .venv/bin/python bench/sync_burst.py [--backend sqlite|postgres] [--rounds 5] [--seed 100000]
                                         [--py-spy DIR] [--table-scans]

``--seed N`` first stores N households in one grid (the bench's burst runs after 100,000).
``--py-spy DIR`` records each server process with py-spy (``pip install py-spy``) into DIR, as
collapsed stacks. ``--table-scans`` prints, on PostgreSQL, the sequential and index scans of each
table during the rounds (``pg_stat_user_tables``). For PostgreSQL's own functions, run the whole
script under ``perf record -a -g``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync_bench import (  # noqa: E402
    BenchDevice,
    bench_servers,
    caught_up_field,
    percentile,
    run_burst,
    seed_households,
)

_TABLE_SCANS = ("SELECT relname, seq_scan, seq_tup_read, idx_scan, n_tup_ins FROM pg_stat_user_tables "
                "WHERE seq_scan > 0 OR idx_scan > 0 ORDER BY seq_tup_read DESC")


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"  # installed into the same venv
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def _postgres(url: str, sql: str) -> list:
    async def run() -> list:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetch(sql)
        finally:
            await connection.close()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--py-spy", type=Path, dest="py_spy")
    parser.add_argument("--table-scans", action="store_true")
    parser.add_argument("--pause", type=float, default=1.5,
                        help="seconds between rounds, so that each starts on a server at rest (as the bench's does)")
    args = parser.parse_args()

    with bench_servers(args.backend) as (codes, servers, url):
        urls = [s.url for s in servers]
        seed_households(BenchDevice(urls[0], codes["big"][0]), args.seed)
        field = caught_up_field(codes, urls)
        spies = []
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            spies = [subprocess.Popen(
                [_py_spy(), "record", "--nonblocking", "-r", "200", "-f", "raw",
                 "-o", str(args.py_spy / f"server{i}.txt"), "-p", str(s.process.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i, s in enumerate(servers)]
            time.sleep(1)
        if url and args.table_scans:
            _postgres(url, "SELECT pg_stat_reset()")
        p99s = []
        for round_ in range(args.rounds):
            time.sleep(args.pause)
            gc.collect()
            gc.freeze()
            burst = run_burst(field, servers, with_database=url is not None)
            p99s.append(percentile(burst.latencies, .99))
            print(f"round {round_}: {burst.latency_line()}; {burst.cpu_line()}", flush=True)
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        print(f"median p99 over {args.rounds} rounds: {statistics.median(p99s) * 1000:.0f} ms")
        if url and args.table_scans:
            time.sleep(1)  # the servers' backends report their counts within a second or so
            for row in _postgres(url, _TABLE_SCANS):
                print("  " + "  ".join(f"{key} {value}" for key, value in row.items()))

if __name__ == "__main__":
    main()
