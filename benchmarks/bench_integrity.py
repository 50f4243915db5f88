"""Throughput of checkpoint integrity manifests: hashing a step's files, and checking them again.

    python benchmarks/bench_integrity.py [--dir /tmp/cft_bench_integrity] [--files 8] [--mb 256]

Writes `--files` random files of `--mb` MB laid out as one step's array data, then times
`integrity.write_manifest` (what the trainer does after each commit) and `integrity.verify` (what a
resume does first) with one hashing thread and with the default pool. The files are in the page
cache after writing, so this measures hashing, not the disk or the bucket.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from cft_jax import integrity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/cft_bench_integrity")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--mb", type=int, default=256)
    args = parser.parse_args()
    step_dir = Path(args.dir) / "1"
    data = step_dir / "model" / "ocdbt.process_0" / "d"
    data.mkdir(parents=True, exist_ok=True)
    for i in range(args.files):
        path = data / f"{i:04d}"
        if not path.is_file() or path.stat().st_size != args.mb << 20:
            path.write_bytes(os.urandom(args.mb << 20))
    total = args.files * (args.mb << 20)
    for workers in sorted({1, integrity.HASH_WORKERS}):
        start = time.perf_counter()
        integrity.write_manifest(step_dir, step=1, workers=workers)
        hashed = time.perf_counter() - start
        start = time.perf_counter()
        verdict = integrity.verify(step_dir, workers=workers)
        checked = time.perf_counter() - start
        print(
            f"{workers} thread(s), {total / 1e9:.2f} GB in {args.files} files: write_manifest "
            f"{total / hashed / 1e6:.0f} MB/s, verify {total / checked / 1e6:.0f} MB/s ({verdict.status})"
        )


if __name__ == "__main__":
    main()
