"""Console page render times on the demo data set (``fieldloop demo``: 3000 households).

    python bench/console_bench.py [--households 3000] [--repeat 7] [--db URL]

Loads the demo into a fresh data folder, signs in as the administrator and as a supervisor, and
prints each page's median and worst time over ``--repeat`` requests (in-process TestClient, so
the figure is the server's work: routing, queries, rendering). The target is 200 ms a page.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from litestar.testing import TestClient

from server.app import create_app
from server.demo import DEMO_PASSWORD, load_demo
from server.settings import Settings

TARGET_MS = 200
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)


def login(client: TestClient, name: str) -> None:
    page = client.get("/console/login")
    token = re.search(r'name="_csrf" value="([^"]+)"', page.text).group(1)
    reply = client.post(
        "/console/login",
        data={"name": name, "password": DEMO_PASSWORD, "_csrf": token, "next": "/console/"},
        follow_redirects=False,
    )
    assert reply.status_code == 303, reply.text


def first_link(client: TestClient, path: str, pattern: str) -> str | None:
    match = re.search(pattern, client.get(path).text)
    return match.group(0).rstrip('"') if match else None


def time_page(client: TestClient, path: str, repeat: int) -> tuple[float, float, int, int]:
    times, status, size = [], 0, 0
    for _ in range(repeat):
        start = time.perf_counter()
        reply = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        status, size = reply.status_code, len(reply.content)
    return statistics.median(times), max(times), status, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--db", default=None, help="a PostgreSQL URL; SQLite in a temp folder when absent")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", db=args.db)
        with TestClient(create_app(settings), timeout=60) as client:
            start = time.perf_counter()
            client.blocking_portal.call(lambda: load_demo(client.app.state.sessionmaker, households=args.households))
            print(f"demo loaded: {args.households} households in {time.perf_counter() - start:.1f} s")
            failures = 0
            for user in ("admin", "supervisor"):
                client.cookies.clear()
                login(client, user)
                visit = first_link(client, "/console/visits?review=all", r"/console/visits/[0-9a-f-]{36}")
                case = first_link(client, "/console/cases?status=closed", r"/console/cases/[0-9a-f-]{36}")
                conflict = first_link(client, "/console/conflicts?state=resolved", r"/console/conflicts/\d+")
                household = first_link(client, "/console/households", r"/console/households/[0-9a-f-]{36}")
                changes = household and household.replace("/households/", "/records/") + "/changes"
                pages = [
                    "/console/",
                    "/console/sync-log",
                    "/console/households",
                    "/console/households?page=20",
                    "/console/visits",
                    "/console/visits?review=all&page=10",
                    "/console/conflicts",
                    "/console/conflicts?state=resolved",
                    "/console/cases",
                    "/console/cases?status=closed",
                    visit,
                    case,
                    conflict,
                    household,
                    changes,
                ]
                if user == "admin":
                    pages += [
                        "/console/admin/users",
                        "/console/admin/grids",
                        "/console/admin/devices",
                        "/console/admin/enrollment",
                        "/console/admin/import",
                    ]
                pages += ["/console/visits?review=all&format=csv", "/console/cases?format=xlsx"]
                print(f"\n{user}:")
                print(f"  {'page':58} {'median ms':>10} {'worst ms':>9} {'status':>6} {'bytes':>8}")
                for path in [p for p in pages if p]:
                    median, worst, status, size = time_page(client, path, args.repeat)
                    export = path.endswith(("format=csv", "format=xlsx"))
                    if status != 200:
                        flag = "  <-- failed"
                    elif export:
                        flag = "  (a download of every row, not a page)"
                    else:
                        flag = "" if median <= TARGET_MS else "  <-- over target"
                    failures += flag.startswith("  <--")
                    print(f"  {path[:58]:58} {median:10.1f} {worst:9.1f} {status:6d} {size:8d}{flag}")
            print(f"\npages over {TARGET_MS} ms or failing: {failures}")
            return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
