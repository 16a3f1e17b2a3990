"""CPU training jobs: one job with all threads against several one-thread jobs at once.

Trains the same small run (CVM-Cervix on a prepared dataset, 32 px, a few epochs), each training in
its own Python process as a workflow job is, first one at a time with ``--threads`` threads, then
``--jobs`` at once with one thread each, and prints the wall time per job of each way. It decides how
many threads `make run` gives a job (the Makefile's ONE_THREAD). Usage, after `make run` prepared
the embedded default:

    .venv/bin/python benchmarks/cpu_jobs.py results/data/synthetic_herlev [--epochs 3] [--threads 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = """
import sys
from cvm_cervix.train import train_run
data, out, threads, epochs, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
train_run("cvm_cervix", data, out, img_size=size, epochs=epochs, batch_size=16, seed=0, device="cpu",
          threads=threads, progress=False)
"""


def jobs(data: str, threads: int, count: int, epochs: int, size: int, tmp: Path) -> float:
    """Seconds of wall time for ``count`` trainings started together, ``threads`` threads each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                TRAIN,
                data,
                str(tmp / f"{threads}_{count}_{i}"),
                str(threads),
                str(epochs),
                str(size),
            ],
            env=env,
        )
        for i in range(count)
    ]
    if any(p.wait() for p in procs):
        raise SystemExit("a training job failed")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a prepared dataset folder (manifest.csv, cache_<size>.npy)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if not (Path(args.data) / f"cache_{args.size}.npy").is_file():
        raise SystemExit(f"{args.data} has no cache_{args.size}.npy: run `make run` first (or the cache rule)")
    with tempfile.TemporaryDirectory() as tmp:
        one = jobs(args.data, args.threads, 1, args.epochs, args.size, Path(tmp))
        many = jobs(args.data, 1, args.jobs, args.epochs, args.size, Path(tmp))
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; CVM-Cervix, {args.size} px, "
        f"{args.epochs} epochs, {args.data}"
    )
    print("| jobs at once | threads per job | wall time (s) | per job (s) |\n|---|---|---|---|")
    print(f"| 1 | {args.threads} | {one:.1f} | {one:.1f} |")
    print(f"| {args.jobs} | 1 | {many:.1f} | {many / args.jobs:.1f} |")


if __name__ == "__main__":
    main()
