"""Client CPU per request of the device's HTTP transport: empty pulls against a real server.

    .venv/bin/python bench/transport_cpu.py [--requests 500]

The server runs in its own process, so this process's CPU time is the transport's alone (plus
msgspec decoding the reply): what 200 simulated phones in sync_bench.py take from the server's
cores, and what a cheap phone pays in battery.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sync_bench import BenchDevice, provision  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.support.servers import LiveServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", db=None)
        settings.data_dir.mkdir(parents=True)
        codes = asyncio.run(provision(settings, grids=1, users_per_grid=1))
        server = LiveServer(settings.data_dir, None).start()
        try:
            device = BenchDevice(server.url, codes["field"][0])
            device.pull_all()
            for _ in range(50):  # warm the connection and the server's caches
                device.transport.pull(device.token, device.cursor, 1000)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.requests):
                device.transport.pull(device.token, device.cursor, 1000)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            device.transport.close()
        finally:
            server.kill()
    print(f"{args.requests} empty pulls: client CPU {cpu / args.requests * 1000:.3f} ms/request, "
          f"wall {wall / args.requests * 1000:.3f} ms/request")


if __name__ == "__main__":
    main()
