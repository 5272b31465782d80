"""The 200-phone burst on two versions of the server, in alternating rounds, to tell a change's
effect from this machine's drift (its speed moves by a third within minutes, more than most
changes are worth).

    .venv/bin/python bench/sync_ab.py --old REV [--backend sqlite|postgres] [--rounds 8] [--seed 100000]

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
)

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def side(backend: str, code_dir: Path, seed: int):
    """Servers running ``code_dir``'s code, with the bench's devices enrolled and caught up."""
    with contextlib.ExitStack() as stack:
        with contextlib.chdir(code_dir):  # the servers run ``python -m server.cli`` from here
            codes, servers, url = stack.enter_context(bench_servers(backend))
        urls = [s.url for s in servers]
        seed_households(BenchDevice(urls[0], codes["big"][0]), seed)
        yield caught_up_field(codes, urls), servers, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the git revision to compare this working tree with")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
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
                figures: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
                order = [("old", "new") if i % 2 == 0 else ("new", "old") for i in range(args.rounds)]
                for pair in order:
                    for name in pair:
                        time.sleep(args.pause)
                        field, servers, url = sides[name]
                        gc.collect()
                        burst = run_burst(field, servers, with_database=url is not None)
                        cpu = burst.server_cpu + (burst.database_cpu or 0.0)
                        figures[name].append((percentile(burst.latencies, .99), cpu))
                        print(f"{name}: {burst.latency_line()}; {burst.cpu_line()}", flush=True)
                for name in ("old", "new"):
                    p99s = [p for p, _ in figures[name]]
                    cpus = [c for _, c in figures[name]]
                    print(f"{name}: median p99 {statistics.median(p99s) * 1000:.0f} ms, "
                          f"median server+database CPU {statistics.median(cpus):.2f} s")
                wins = sum(n[0] < o[0] for o, n in zip(figures["old"], figures["new"]))
                print(f"new's p99 below old's in {wins} of {args.rounds} paired rounds")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_dir)], check=False)


if __name__ == "__main__":
    main()
