"""The 200-phone burst (or one writer's push of 10,000 visits) on two versions of the server, in
alternating rounds, to tell a change's effect from this machine's drift (its speed moves by a
third within minutes, more than most changes are worth).

    .venv/bin/python bench/sync_ab.py --old REV [--backend sqlite|postgres] [--measure burst|push]
                                      [--rounds 8] [--seed 100000]

The old server runs from a checkout of REV (made in a temporary folder), the new one from this
working tree; each has its own database, seeded alike. Rounds go old, new, new, old, old, new, ...
so that a steady drift favours neither. Both versions must have the same database schema: the
databases are made by this tree's migrations.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync_bench import (  # noqa: E402
    BenchDevice,
    bench_servers,
    caught_up_field,
    percentile,
    run_burst,
    seed_households,
    timed_push,
)

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def side(backend: str, code_dir: Path, seed: int):
    """Servers running ``code_dir``'s code, with the bench's devices enrolled and caught up."""
    with contextlib.ExitStack() as stack:
        with contextlib.chdir(code_dir):  # the servers run ``python -m server.cli`` from here
            codes, servers, url = stack.enter_context(bench_servers(backend))
        urls = [s.url for s in servers]
        writer = BenchDevice(urls[0], codes["big"][0])
        seed_households(writer, seed)
        yield writer, caught_up_field(codes, urls), servers, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the git revision to compare this working tree with")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--measure", choices=["burst", "push"], default="burst")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per side")
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--pause", type=float, default=1.5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        old_dir = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_dir), args.old],
                       check=True, capture_output=True)
        try:
            with side(args.backend, old_dir, args.seed) as old, side(args.backend, ROOT, args.seed) as new:
                sides = {"old": old, "new": new}
                figures: dict[str, list[float]] = {"old": [], "new": []}  # push rates or burst p99s
                cpus: dict[str, list[float]] = {"old": [], "new": []}  # the burst's server+database CPU
                order = [("old", "new") if i % 2 == 0 else ("new", "old") for i in range(args.rounds)]
                for pair in order:
                    for name in pair:
                        time.sleep(args.pause)
                        writer, field, servers, url = sides[name]
                        gc.collect()
                        if args.measure == "push":
                            rate = 10_000 / timed_push(writer)
                            figures[name].append(rate)
                            print(f"{name}: push {rate:,.0f} mutations/s", flush=True)
                            continue
                        burst = run_burst(field, servers, with_database=url is not None)
                        figures[name].append(percentile(burst.latencies, .99))
                        cpus[name].append(burst.server_cpu + (burst.database_cpu or 0.0))
                        print(f"{name}: {burst.latency_line()}; {burst.cpu_line()}", flush=True)
                if args.measure == "push":
                    for name in ("old", "new"):
                        print(f"{name}: median push {statistics.median(figures[name]):,.0f} mutations/s")
                    wins = sum(n > o for o, n in zip(figures["old"], figures["new"]))
                    print(f"new's push above old's in {wins} of {args.rounds} paired rounds")
                else:
                    for name in ("old", "new"):
                        print(f"{name}: median p99 {statistics.median(figures[name]) * 1000:.0f} ms, "
                              f"median server+database CPU {statistics.median(cpus[name]):.2f} s")
                    wins = sum(n < o for o, n in zip(figures["old"], figures["new"]))
                    print(f"new's p99 below old's in {wins} of {args.rounds} paired rounds")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_dir)], check=False)


if __name__ == "__main__":
    main()
