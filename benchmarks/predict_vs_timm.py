"""`cvm-cervix predict` against timm's own `inference.py` loop: images/s and peak memory, same model, images
and threads.

timm's `inference.py` is a script of its repository, not of the `timm` wheel, so its pipeline is run here as
the script runs it (huggingface/pytorch-image-models, `inference.py`, `main()`): `create_dataset` (an
ImageFolder), `resolve_data_config` from the model, `create_loader(use_prefetcher=True, num_workers=W)`,
then under `torch.inference_mode()` the model, `softmax`, `topk(1)`, every batch's outputs kept in lists
and written as one CSV at the end. Its arguments here: `--img-size S --crop-pct 1.0 --crop-mode squash`
(the run's own resize of both sides), `-b B -j W --topk 1`, on the CPU.

The model is a run of a timm architecture (default Xception, the paper's CNN branch) trained for one epoch
on a few synthetic images and exported: `cvm-cervix predict` loads the export folder, timm its
`timm_model.safetensors` with `timm.create_model(..., pretrained_cfg_overlay=dict(file=...))`. Each side
runs in a fresh process; peak memory is that process's maximum resident set (VmHWM), and for timm's
worker processes their largest one beside it (`predict` decodes on threads of its own process).

    .venv/bin/python benchmarks/predict_vs_timm.py IMAGE_FOLDER [--images 500 4000] [--size 64] \
        [--batch 64] [--threads 2] [--workers 2] [--model xception]

IMAGE_FOLDER is any <class>/<image> folder (e.g. ../shared/data/pbc/PBC_dataset_normal_DIB); its images
are linked, repeated under new names where fewer than asked, into a temporary ImageFolder. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def image_folder(source: Path, count: int, dest: Path) -> Path:
    """``count`` images of ``source`` linked into ``dest/<class>/``, cycling (under new names) where it has fewer."""
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise SystemExit(f"{source} holds no images")
    for i in range(count):
        f = files[i % len(files)]
        target = dest / f.parent.name / f"{i:06d}{f.suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f.resolve())
    return dest


def make_export(model: str, size: int, work: Path) -> Path:
    """A run of ``model`` trained one epoch on 4 synthetic images per class, evaluated and exported."""
    from cvm_cervix.data import build_cache, make_synthetic_dataset, prepare_dataset, read_manifest
    from cvm_cervix.evaluate import evaluate_run
    from cvm_cervix.export import export_run, timm_checkpoint
    from cvm_cervix.run import TrainedRun
    from cvm_cervix.train import train_run

    make_synthetic_dataset(work / "images", "pbc", per_class=5, image_size=size, seed=0)
    data = work / "results" / "data" / "syn"
    prepare_dataset("syn", {"kind": "synthetic", "classes": "pbc"}, data, root=work / "images")
    build_cache(read_manifest(data / "manifest.csv")["path"].tolist(), size, data / f"cache_{size}.npy")
    run = work / "results" / "runs" / "syn" / model / "none" / "seed0"
    train_run(model, data, run, img_size=size, epochs=1, batch_size=8, threads=2, progress=False, pretrained=False)
    evaluate_run(run, data, threads=2)
    export = export_run(run, work / "export")
    timm = timm_checkpoint(TrainedRun.open(run))
    if timm is None:
        raise SystemExit(f"{model} is no timm architecture: timm cannot load it")
    (export / "timm_call.json").write_text(json.dumps({k: v for k, v in timm.items() if k != "state"}))
    return export


def peak_mib() -> dict:
    """This process's peak resident memory (VmHWM: ``ru_maxrss`` would keep the launching process's peak
    across ``exec``) and its largest child's (timm's worker processes, whose pages shared with this one at
    the fork count in both)."""
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return {
        "peak_mib": hwm / 1024,
        "workers_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # KiB on Linux
    }


def run_predict(args) -> dict:
    import torch

    from cvm_cervix.cli import main as cli

    torch.set_num_threads(args.threads)
    out = Path(args.work) / "predict.csv"
    start = time.perf_counter()
    argv = ["predict", args.folder, "--run", args.export, "--device", "cpu", "-o", str(out)]
    argv += ["--batch-size", str(args.batch), "--threads", str(args.threads), "--workers", str(args.workers)]
    if cli(argv) != 0:
        raise SystemExit("predict failed")
    return {"seconds": time.perf_counter() - start, **peak_mib()}


def run_timm(args) -> dict:
    """timm's inference.py main(), as it runs with the arguments in this file's docstring."""
    import numpy as np
    import pandas as pd
    import timm
    import torch
    from timm.data import create_dataset, create_loader, resolve_data_config

    torch.set_num_threads(args.threads)
    call = json.loads((Path(args.export) / "timm_call.json").read_text())  # the export's timm_checkpoint
    start = time.perf_counter()
    model = timm.create_model(
        call["arch"],
        pretrained=True,
        pretrained_cfg_overlay=dict(
            file=str(Path(args.export) / "timm_model.safetensors"), num_classes=call["kwargs"]["num_classes"]
        ),
        **call["kwargs"],
    ).eval()
    # inference.py's --img-size, --crop-pct, --crop-mode, --mean and --std
    given = {"img_size": args.size, "crop_pct": 1.0, "crop_mode": "squash", "mean": call["mean"], "std": call["std"]}
    data_config = resolve_data_config(given, model=model, use_test_size=True)
    dataset = create_dataset(root=args.folder, name="", split="validation")
    loader = create_loader(
        dataset,
        batch_size=args.batch,
        use_prefetcher=True,
        num_workers=args.workers,
        device=torch.device("cpu"),
        **data_config,
    )
    outputs, indices = [], []
    with torch.inference_mode():
        for batch, _ in loader:
            output = model(batch).softmax(-1)
            output, index = output.topk(1)
            indices.append(index.cpu().numpy())
            outputs.append(output.float().cpu().numpy())
    frame = pd.DataFrame(
        {
            "filename": loader.dataset.filenames(basename=True),
            "index": np.concatenate(indices).squeeze(-1),
            "prob": np.concatenate(outputs).squeeze(-1),
        }
    )
    frame.to_csv(Path(args.work) / "timm.csv", index=False)
    return {"seconds": time.perf_counter() - start, **peak_mib()}


def contestant(side: str, folder: Path, export: Path, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--folder", str(folder), "--export", str(export)]
    cmd += ["--work", str(work), "--size", str(args.size), "--batch", str(args.batch)]
    cmd += ["--threads", str(args.threads), "--workers", str(args.workers), str(args.source)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a <class>/<image> folder")
    parser.add_argument("--images", type=int, nargs="+", default=[500, 4000], help="image counts (default: 500 4000)")
    parser.add_argument("--size", type=int, default=64, help="side the images are resized to (default: 64)")
    parser.add_argument("--batch", type=int, default=64, help="batch size of both (default: 64)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both (default: 2)")
    parser.add_argument("--workers", type=int, default=2, help="decoding workers of both (default: 2)")
    parser.add_argument("--model", default="xception", help="a timm architecture of the registry (default: xception)")
    parser.add_argument("--side", choices=["predict", "timm"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--export", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps((run_predict if args.side == "predict" else run_timm)(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export = make_export(args.model, args.size, work / "run")
        rows = []
        for count in args.images:
            folder = image_folder(args.source, count, work / f"images_{count}")
            for side in ("timm", "predict"):
                side_work = work / f"{side}_{count}"
                side_work.mkdir()
                result = contestant(side, folder, export, side_work, args)
                rows.append((count, side, result))
    print(
        f"{args.model}, {args.size} px, batch {args.batch}, {args.threads} threads, {args.workers} workers; "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}\n"
    )
    print("| images | pipeline | images/s | peak memory, MiB (process) | largest worker process, MiB |")
    print("|---:|---|---:|---:|---:|")
    for count, side, r in rows:
        name = "timm `inference.py` loop" if side == "timm" else "`cvm-cervix predict`"
        workers = f"{r['workers_peak_mib']:.0f}" if side == "timm" else "– (threads)"
        print(f"| {count} | {name} | {count / r['seconds']:.1f} | {r['peak_mib']:.0f} | {workers} |")


if __name__ == "__main__":
    main()
