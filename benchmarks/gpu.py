"""GPU benchmark of CVM-Cervix: the paper's batch of 16 against the card's floor, and where the time goes.

One command, a few minutes on one GPU, with nothing but torch, torchvision, timm, numpy, pandas,
safetensors, tqdm, pyyaml and jsonschema installed (the configuration's schema is checked with it; a
machine without it gets it from the wheels of ``benchmarks/gpu_wheels.py``), from the repository root:

    PYTHONPATH=src python3 benchmarks/gpu.py [--images 8844] [--size 224] [--budget 420] [--json out.json]

On a synthetic set of the combined set's size (written as 100 px PNG files, the CRIC crop size) it
measures CVM-Cervix at ``--size``, in this order, so that a short ``--budget`` ends the list with what
matters least (every section left out is listed under "skipped", and one that fails under "failed"
without ending the others; ``--json`` is rewritten after every section):

1. the step: training images/s of the workflow's step (``cvm_cervix.train.train_epoch``: uint8 cache
   on the GPU, flips and normalisation on the device, no per-step read-back) at batch 16, eager and
   captured as a CUDA graph (``cvm_cervix.step.CapturedStep``), in float32 and bf16 autocast, with
   AdamW as the workflow uses it and fused; and its floor, the eager rate at the largest batch that
   fits (tried from ``--max-batch`` down), in the same precision;
2. inference images/s (``cvm_cervix.engine.predict``) in float32 and bf16;
3. K = 1, 2, 4, 8 training processes at batch 16 sharing one GPU (``gpu.jobs_per_device``), started
   together and timed over the same seconds: their summed images/s, the memory each holds (PyTorch's
   peak reservation, and the device's memory in use with all K running), the CPU cores they keep
   busy, and the seconds from each process's start to its first step;
4. warm-up: K processes at the embedded default's 32 px, as ``make run`` starts them on a GPU, with
   cuDNN's autotuning on (what training does) and off: seconds to the first step;
5. each model of ``config/paper.yaml`` at batch 16 (captured where it captures) and at a large batch,
   for the projection of the whole plan in GPU-hours against its floor (each run's images × epochs
   at its model's large-batch rate);
6. extras measured before: images pinned in host memory, the captured step at the large batch,
   ``torch.compile(mode="reduce-overhead")``, and a plain loop (``ImageFolder`` + ``DataLoader``
   decoding the PNG files every epoch, ``loss.item()`` every step) that every rate is compared with.

It prints Markdown tables for BENCHMARKS.md and ends with the defaults the numbers argue for
(``recommend``). ``--resume`` goes on from the ``--json`` of an earlier run on the same card, measuring
only what it left out. Without CUDA it says so, runs the CPU side-by-side
comparison of the two training loops at a small size instead (``--cpu-size``), and exits 0;
``--device cpu`` runs this benchmark's own code on the CPU at a tiny size (a smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from cvm_cervix.data import CLASS_SETS, build_cache, render_cell  # noqa: E402
from cvm_cervix.engine import predict  # noqa: E402
from cvm_cervix.models import create_model  # noqa: E402
from cvm_cervix.step import WARMUP_STEPS, CapturedStep  # noqa: E402
from cvm_cervix.train import train_epoch  # noqa: E402

CLASSES = list(CLASS_SETS["combined"])


# --- data ---------------------------------------------------------------------------------------------


def _render_chunk(args):
    root, items, size = args
    from PIL import Image

    for label, index in items:
        name = CLASSES[label]
        rng = np.random.default_rng([0, label, index])
        Image.fromarray(render_cell(CLASS_SETS["combined"][name], size, rng)).save(
            Path(root) / name / f"{index:05d}.png", format="PNG"
        )


def make_images(root: Path, n: int, size: int = 100, workers: int = 8) -> tuple[list[str], np.ndarray]:
    """``n`` synthetic cells as ``root/<class>/NNNNN.png``; returns paths and labels in one order."""
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    items = [(i % len(CLASSES), i) for i in range(n)]
    chunks = [(str(root), items[i::workers], size) for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_render_chunk, chunks))
    paths = [str(root / CLASSES[label] / f"{index:05d}.png") for label, index in items]
    return paths, np.array([label for label, _ in items])


# --- the workflow's loop ------------------------------------------------------------------------------


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _free(dev):
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def project_train_rate(
    model, optimizer, images, labels, batch, steps, dev, amp, warmup=3, captured=False, step=None
) -> float:
    """Training images/s of ``cvm_cervix.train.train_epoch`` over ``steps`` batches after ``warmup``; with
    ``captured``, of the step replayed as a CUDA graph (``cvm_cervix.step.CapturedStep``: capture happens
    in the warm-up, which then needs more than its 3 eager steps); ``step``: a step object kept between
    calls (a captured one is captured once)."""
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    n = len(images)
    gen = torch.Generator().manual_seed(0)

    def batches(k):
        order = torch.randperm(max(n, batch * k), generator=gen) % n
        return [order[i * batch : (i + 1) * batch].to(images.device) for i in range(k)]

    if step is None and captured:
        step = CapturedStep(model, optimizer, scaler, images, labels, 1, dev, amp, batch_size=batch)
        warmup = max(warmup, WARMUP_STEPS + 2)
    model.train()
    if warmup:
        loss, _, _, _, _ = train_epoch(
            model, optimizer, scaler, images, labels, batches(warmup), 1, dev, amp, step=step
        )
        float(loss)
    _sync(dev)
    start = time.perf_counter()
    loss, _, seen, _, _ = train_epoch(model, optimizer, scaler, images, labels, batches(steps), 1, dev, amp, step=step)
    float(loss)  # the one read-back, as per epoch in training
    return seen / (time.perf_counter() - start)


def infer_rate(model, images, batch, dev, amp, repeats=2) -> float:
    predict(model, images[: batch * 2], batch, dev, amp)
    best = min(predict(model, images, batch, dev, amp)["seconds"] for _ in range(repeats))
    return len(images) / best


# --- a plain loop ---------------------------------------------------------------------------------------


def plain_train_rate(root: Path, model, optimizer, size, batch, steps, dev, amp, workers, warmup=3) -> float:
    """The usual loop: ImageFolder + DataLoader transforms per image per epoch, loss.item() per step."""
    import torchvision
    from torchvision import transforms

    # ToTensor gives [0, 1]: the model normalises its input with its own weights' statistics.
    tf = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    data = torchvision.datasets.ImageFolder(str(root), transform=tf)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )
    model.train()
    dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    seen, start, running = 0, None, 0.0

    def batches():  # as many epochs as the warm-up and timed steps need
        while True:
            yield from loader

    for i, (x, y) in enumerate(batches()):
        if i == warmup:
            _sync(dev)
            start, seen = time.perf_counter(), 0
        if i == warmup + steps:
            break
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=dtype, enabled=amp and dev.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item()
        seen += len(y)
    _sync(dev)
    return seen / (time.perf_counter() - start)


# --- helpers ------------------------------------------------------------------------------------------------


def fresh_model(name, dev, size, compile_mode=None, capturable=False, fused=False):
    """A new model on ``dev``, the module the step calls (compiled with ``compile_mode``, if given) and AdamW
    as training builds it (``capturable`` for a captured step; ``fused``: one kernel for all parameters)."""
    model = create_model(name, len(CLASSES), size).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    step = torch.compile(model, mode=compile_mode) if compile_mode else model
    options = {"capturable": True} if capturable else {}
    if fused:
        options["fused"] = True
    return model, step, torch.optim.AdamW(model.parameters(), lr=2e-4, **options)


def largest_batch(images, labels, dev, amp, size, start=16, limit=1024) -> int:
    """The largest batch, ``limit`` halved until it reaches ``start``, whose training step fits in memory
    (from the top: one try where it fits, as it does at 224 px on a large card)."""
    batch = limit
    while batch > start:
        try:
            _, step, opt = fresh_model("cvm_cervix", dev, size)
            project_train_rate(step, opt, images, labels, batch, 1, dev, amp, warmup=1)
            return batch
        except torch.OutOfMemoryError:
            batch //= 2
        finally:
            step = opt = None
            _free(dev)
    return start


class Budget:
    """Seconds left of ``--budget``; a section asks before each measurement whether it has enough."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# --- K processes sharing the GPU --------------------------------------------------------------------------


def worker(args) -> None:
    """One of K training processes started together: warm up (capture, where captured), wait until all K
    have, train for ``--seconds``, print one JSON line of what it measured."""
    imported = time.time() - args.t0
    dev = torch.device(args.device)
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    # the CPU smoke run: K processes on a few cores, one thread each (oversubscribed OpenMP threads
    # spin against each other) and one step per timed call, enough to run the code
    steps = 20 if dev.type == "cuda" else 1
    if dev.type != "cuda":
        torch.set_num_threads(1)
    images = torch.from_numpy(np.ascontiguousarray(np.load(args.worker, mmap_mode="r"))).to(dev)
    labels = torch.arange(len(images), device=dev) % len(CLASSES)
    captured = args.step == "cuda_graph"
    model, step, opt = fresh_model("cvm_cervix", dev, args.size, capturable=captured, fused=args.fused)
    project_train_rate(step, opt, images, labels, args.batch, 0, dev, True, warmup=1)  # the first step, alone
    first_step = time.time() - args.t0
    # then the rest of the warm-up: one step at a time on the CPU; capture, where captured
    step_ = (
        CapturedStep(
            model, opt, torch.amp.GradScaler("cuda", enabled=False), images, labels, 1, dev, True, batch_size=args.batch
        )
        if captured
        else None
    )
    project_train_rate(
        step, opt, images, labels, args.batch, 0, dev, True, warmup=WARMUP_STEPS + 2 if captured else 2, step=step_
    )
    ready = time.time() - args.t0
    Path(args.barrier, f"ready.{os.getpid()}").touch()
    deadline = time.monotonic() + 600
    while len(list(Path(args.barrier).glob("ready.*"))) < args.runs:  # every run starts its timed window together
        if time.monotonic() > deadline:
            raise SystemExit(f"worker {os.getpid()}: the other runs did not get ready in 600 s")
        time.sleep(0.005)
    seen, start, cpu0, in_use = 0, time.perf_counter(), time.process_time(), None
    while time.perf_counter() - start < args.seconds:
        project_train_rate(step, opt, images, labels, args.batch, steps, dev, True, warmup=0, step=step_)
        seen += steps * args.batch
        if in_use is None and dev.type == "cuda":  # the device's memory in use, every run alive and training
            free, total = torch.cuda.mem_get_info(dev)
            in_use = (total - free) / 2**20
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_reserved(dev) / 2**20
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # host memory: the CPU smoke run
    print(
        json.dumps(
            {
                "images_per_s": seen / wall,
                "cpu_cores": cpu / wall,
                "peak_mib": peak,
                "device_in_use_mib": in_use,
                "import_s": imported,
                "first_step_s": first_step,
                "ready_s": ready,
            }
        ),
        flush=True,
    )


def concurrent_runs(
    k: int,
    cache: Path,
    batch: int,
    seconds: float,
    size: int,
    device: str,
    step: str = "eager",
    fused: bool = False,
    cudnn_benchmark: bool = True,
) -> dict:
    """``k`` worker processes started at once; their sum (images/s, CPU cores) and their worst (memory, first step)."""
    barrier = Path(tempfile.mkdtemp(prefix="cvm_barrier_"))
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        str(cache),
        "--batch",
        str(batch),
        "--seconds",
        str(seconds),
        "--size",
        str(size),
        "--device",
        device,
        "--step",
        step,
        "--runs",
        str(k),
        "--barrier",
        str(barrier),
        "--cudnn-benchmark",
        str(int(cudnn_benchmark)),
    ] + (["--fused"] if fused else [])
    path = os.environ.get("PYTHONPATH")  # kept: it may hold what this machine's Python lacks (gpu_checks.sh)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + (os.pathsep + path if path else "")}
    # each run's output to files, and every run watched at once: one that fails ends the others at once
    # (they would wait at the barrier for it)
    outs = [(open(barrier / f"out.{i}", "w+"), open(barrier / f"err.{i}", "w+")) for i in range(k)]
    procs = [
        subprocess.Popen(cmd + ["--t0", repr(time.time())], stdout=out, stderr=err, text=True, env=env)
        for out, err in outs
    ]
    deadline = time.monotonic() + seconds + 600
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        codes = [p.poll() for p in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
    texts = []
    for out, err in outs:
        out.seek(0), err.seek(0)
        texts.append((out.read(), err.read()))
        out.close(), err.close()
    shutil.rmtree(barrier, ignore_errors=True)
    bad = [(c, e) for c, (_, e) in zip(codes, texts) if c != 0]
    if bad:
        code, err = next(((c, e) for c, e in bad if c is not None), bad[0])
        print(err[-3000:], file=sys.stderr)  # the whole story, for the log
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(
            f"{len(bad)} of {k} runs failed or ran out of time; the first: "
            f"{'timed out' if code is None else f'exit {code}'}: {last}"
        )
    runs = [json.loads(o.strip().splitlines()[-1]) for o, _ in texts]
    in_use = [r["device_in_use_mib"] for r in runs if r["device_in_use_mib"] is not None]
    return {
        "runs": k,
        "step": step,
        "fused": fused,
        "cudnn_benchmark": cudnn_benchmark,
        "size": size,
        "images_per_s": sum(r["images_per_s"] for r in runs),
        "per_run_images_per_s": [r["images_per_s"] for r in runs],
        "cpu_cores": sum(r["cpu_cores"] for r in runs),
        "peak_mib_per_run": max(r["peak_mib"] for r in runs),
        "device_in_use_mib": max(in_use) if in_use else None,
        "import_s": max(r["import_s"] for r in runs),
        "first_step_s": max(r["first_step_s"] for r in runs),
        "mean_first_step_s": sum(r["first_step_s"] for r in runs) / k,
        "ready_s": max(r["ready_s"] for r in runs),
    }


# --- the paper's plan ---------------------------------------------------------------------------------------


def paper_plan(config: dict | None = None):
    """config/paper.yaml, validated, and its runs."""
    import warnings

    import yaml

    from cvm_cervix.config import validate_config
    from cvm_cervix.runs import all_runs

    config = config or yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    with warnings.catch_warnings():  # its dataset roots are unset: planning warns of each, as it should
        warnings.simplefilter("ignore", UserWarning)
        validate_config(config, require_roots=False)
    return config, all_runs(config)


def paper_plan_hours(rates: dict[str, float], infer: float) -> tuple[float, int]:
    """GPU-hours of every run config/paper.yaml plans: epochs × (train / train rate + val / infer rate)."""
    import yaml

    from cvm_cervix.runs import run_settings, split_recipe

    config, runs = paper_plan()
    paper = yaml.safe_load((REPO / "src" / "cvm_cervix" / "paper_results.yaml").read_text())
    key_of = {}  # each dataset's counts: the paper's table of the first experiment that reproduces one
    for e in config["experiments"].values():
        if e.get("paper"):
            key_of.setdefault(e["dataset"], e["paper"])
    for name, spec in config["datasets"].items():  # the same cells split another way (the grouped split)
        twin = next(
            (d for d in key_of if spec.get("parts") and config["datasets"][d].get("parts") == spec["parts"]), None
        )
        if name not in key_of and twin:
            key_of[name] = key_of[twin]
    seconds = 0.0
    for run in runs:
        key = key_of[run.dataset]
        counts = np.array(list(paper["splits"][key].values()))
        train, val, test = counts.sum(0)
        # The paper's tables count the training split as trained: Herlev's after ×4 (split_notes).
        if split_recipe(run.recipe)[0] == "flip4x" and key not in paper.get("split_notes", {}):
            train *= 4
        settings = run_settings(config, run)  # a variant may train on a fraction, or longer
        train *= settings.get("train_fraction", 1.0)
        rate = rates.get(run.model, rates["cvm_cervix"])
        seconds += settings["epochs"] * (train / rate + val / infer) + test / infer
    return seconds / 3600, len(runs)


def plan_models() -> list[str]:
    """The models of config/paper.yaml, those with the most runs first (they weigh most in the projection)."""
    from collections import Counter

    counts = Counter(run.model for run in paper_plan()[1])
    return sorted(counts, key=lambda m: (-counts[m], m))


def table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------


def cpu_comparison(args) -> dict:
    """No CUDA: the two training loops side by side on the CPU, small enough for a laptop."""
    dev = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        paths, labels = make_images(root, args.cpu_images, 100, workers=max(1, min(4, os.cpu_count() or 1)))
        array = build_cache(paths, args.cpu_size, Path(tmp) / "cache.npy", threads=os.cpu_count() or 1)
        images, y = torch.from_numpy(array), torch.from_numpy(labels)
        loops = {
            "plain": lambda m, o: plain_train_rate(
                root, m, o, args.cpu_size, 16, args.cpu_steps, dev, False, args.workers
            ),
            "workflow": lambda m, o: project_train_rate(m, o, images, y, 16, args.cpu_steps, dev, False),
        }
        models = {}
        for name in loops:
            torch.manual_seed(0)
            models[name] = fresh_model("cvm_cervix", dev, args.cpu_size)[1:]
        out = {name: 0.0 for name in loops}
        for _ in range(args.cpu_repeats):  # alternate the loops, keep each one's best: a fair side-by-side
            for name, fn in loops.items():
                out[name] = max(out[name], fn(*models[name]))
    print(
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads), CVM-Cervix at {args.cpu_size} px, batch 16, "
        f"{args.cpu_images} synthetic images, best of {args.cpu_repeats} × {args.cpu_steps} timed steps, "
        f"{args.workers} DataLoader workers, "
        f"torch {torch.__version__}"
    )
    print(
        table(
            [
                ["plain ImageFolder + DataLoader, loss.item() per step", f"{out['plain']:.1f}", "1.00"],
                [
                    "workflow (decode-once cache, device-side flips, one read-back per epoch)",
                    f"{out['workflow']:.1f}",
                    f"{out['workflow'] / out['plain']:.2f}",
                ],
            ],
            ["training loop", "images/s", "× plain"],
        )
    )
    return {"cpu": out, "size": args.cpu_size, "threads": torch.get_num_threads()}


def gpu_benchmark(args) -> dict:
    budget = Budget(args.budget)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.backends.cudnn.benchmark = True  # as training sets it
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU ({platform.machine()}), smoke run"
    result: dict = {
        "device": name,
        "torch": torch.__version__,
        "size": args.size,
        "images": args.images,
        "budget_s": args.budget,
        "train": [],
        "infer": [],
        "concurrent": {},
        "warmup": [],
        "model_rates": {},
        "floor_rates": {},
        "plain": None,
        "skipped": [],
        "failed": [],
    }
    result = resumed(args, result)

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, default=str))

    def section(title, fn):
        """One section: a failure is recorded and the next section runs; the JSON is rewritten after it."""
        t0 = time.monotonic()
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - one failed section must not cost the others' numbers
            traceback.print_exc()
            result["failed"].append(f"{title}: {type(err).__name__}: {err}")
        finally:
            _free(dev)
            spent = result.setdefault("section_seconds", {})
            spent[title] = round(spent.get(title, 0) + time.monotonic() - t0, 1)
            save()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        threads = min(16, os.cpu_count() or 1)
        paths, labels = make_images(tmp / "images", args.images, 100, workers=threads)
        array = build_cache(paths, args.size, tmp / "cache.npy", threads=threads)
        few = min(len(paths), 512)  # the concurrent runs' images: a step's cost does not depend on the set's size
        np.save(tmp / "few.npy", array[:few])
        build_cache(paths[:few], 32, tmp / "few_32.npy", threads=threads)
        print(
            f"{len(paths)} synthetic images written and cached at {args.size} px in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        y = torch.from_numpy(labels).to(dev)
        resident = torch.from_numpy(array).to(dev)
        big = result.get("largest_batch") or largest_batch(resident, y, dev, True, args.size, limit=args.max_batch)
        result["largest_batch"] = big
        print(f"largest batch that fits (bf16 autocast, tried from {args.max_batch} down): {big}", flush=True)
        pinned = None

        def measure(precision, store, batch, mode, fused=False):
            """One training row; ``mode``: eager, cuda_graph or reduce-overhead (torch.compile)."""
            nonlocal pinned
            need = {"eager": 15, "cuda_graph": 20}.get(mode, 150)
            label = f"train {precision} {store} batch {batch} {mode}{' fused' if fused else ''}"
            row = {
                "precision": precision,
                "images_on": "GPU" if store == "GPU" else "host, pinned",
                "batch": batch,
                "step": mode,
                "optimizer": "AdamW fused" if fused else "AdamW",
            }
            if any(all(r[k] == v for k, v in row.items()) for r in result["train"]):
                return  # measured already (by this run: the floor's batch may be 16; or by the one resumed)
            if mode == "cuda_graph" and not cuda:
                result["skipped"].append(f"{label}: the captured step needs CUDA")
                return
            if budget.left() < need:
                result["skipped"].append(f"{label}: out of time")
                return
            if store == "GPU":
                images, labels_ = resident, y
            else:
                if pinned is None:
                    pinned = torch.from_numpy(array).pin_memory() if cuda else torch.from_numpy(array)
                images, labels_ = pinned, y.cpu()
            model, step, opt = fresh_model(
                "cvm_cervix", dev, args.size, mode if mode == "reduce-overhead" else None, mode == "cuda_graph", fused
            )
            try:
                rate = project_train_rate(
                    step,
                    opt,
                    images,
                    labels_,
                    batch,
                    args.steps,
                    dev,
                    precision == "bf16",
                    warmup=10 if mode == "reduce-overhead" else args.warmup,
                    captured=mode == "cuda_graph",
                )
            except torch.OutOfMemoryError:
                rate = None
            del model, step, opt
            _free(dev)
            result["train"].append({**row, "images_per_s": rate})
            print(f"{label}: {rate}", flush=True)

        def the_step():  # 1. batch 16, eager and captured, against the floor
            for p in args.precisions:
                measure(p, "GPU", 16, "eager")
                measure(p, "GPU", 16, "cuda_graph")
                measure(p, "GPU", big, "eager")
            if "bf16" in args.precisions:
                measure("bf16", "GPU", 16, "eager", fused=True)
                measure("bf16", "GPU", 16, "cuda_graph", fused=True)

        def inference():  # 2.
            if result["infer"]:
                return
            model, _, _ = fresh_model("cvm_cervix", dev, args.size)
            for precision in ("fp32", "bf16"):
                for batch in (64, 256):
                    rate = infer_rate(model, resident, batch, dev, precision == "bf16")
                    result["infer"].append({"precision": precision, "batch": batch, "images_per_s": rate})
                    print(f"infer {precision} batch {batch}: {rate:.0f}", flush=True)

        def sharing():  # 3. K runs at batch 16, with the best batch-16 step measured above
            mode = best_row(result, 16)
            result["sharing_step"] = mode
            for k in args.concurrent:
                if k in result["concurrent"]:
                    continue
                if budget.left() < 30 + args.seconds + 3 * k:
                    result["skipped"].append(f"concurrent K={k}: out of time")
                    continue
                r = concurrent_runs(
                    k, tmp / "few.npy", 16, args.seconds, args.size, args.device, mode["step"], mode["fused"]
                )
                result["concurrent"][k] = r
                save()
                print(
                    f"K={k} runs at batch 16 ({mode['step']}): {r['images_per_s']:.0f} images/s in all, "
                    f"{r['peak_mib_per_run']:.0f} MiB peak per run, {r['cpu_cores']:.1f} CPU cores, first step after "
                    f"{r['first_step_s']:.1f} s",
                    flush=True,
                )

        def warmup():  # 4. the embedded default's start: K processes at 32 px, cuDNN autotuning on and off
            k = max([k for k in args.concurrent if k <= 4] or [1])
            for autotune in (True, False):
                label = f"warm-up K={k} at 32 px, cuDNN autotuning {'on' if autotune else 'off'}"
                if any(w["cudnn_benchmark"] == autotune for w in result["warmup"]):
                    continue
                if not autotune and not cuda:
                    result["skipped"].append(f"{label}: cuDNN needs CUDA")
                    continue
                if budget.left() < 40:
                    result["skipped"].append(f"{label}: out of time")
                    continue
                r = concurrent_runs(k, tmp / "few_32.npy", 16, 2, 32, args.device, cudnn_benchmark=autotune)
                result["warmup"].append(r)
                save()
                print(
                    f"{label}: first step after {r['mean_first_step_s']:.1f} s (slowest {r['first_step_s']:.1f} s; "
                    f"imports {r['import_s']:.1f} s)",
                    flush=True,
                )

        def per_model():  # 5. each model of the plan at batch 16 and at a large batch
            mode = best_row(result, 16)
            result["model_rates"]["cvm_cervix"] = mode["images_per_s"]
            result["floor_rates"]["cvm_cervix"] = floor_rate(result, "bf16")
            if args.no_per_model:
                result["skipped"].append("per-model rates: --no-per-model")
                return
            fake = torch.randint(0, 255, (128, 3, args.size, args.size), dtype=torch.uint8, device=dev)
            fake_y = torch.arange(128, device=dev) % len(CLASSES)
            from cvm_cervix.models import get_model_spec

            for m in [m for m in (args.models or plan_models()) if m != "cvm_cervix"]:
                if m in result["model_rates"] and m in result["floor_rates"]:
                    continue
                if budget.left() < 20 or get_model_spec(m).min_img_size > args.size:
                    result["skipped"].append(
                        f"per-model rate {m}: "
                        + ("out of time" if budget.left() < 20 else f"needs more than {args.size} px")
                    )
                    continue
                captured = mode["step"] == "cuda_graph"
                _, step, opt = fresh_model(m, dev, args.size, capturable=captured, fused=mode["fused"])
                try:
                    result["model_rates"][m] = project_train_rate(
                        step, opt, fake, fake_y, 16, args.model_steps, dev, True, captured=captured
                    )
                except Exception as err:  # noqa: BLE001 - a model whose step cannot be captured: its eager rate
                    if not captured:
                        raise
                    print(f"{m}: captured step failed ({type(err).__name__}: {err}); eager instead", flush=True)
                    del step, opt
                    _free(dev)
                    _, step, opt = fresh_model(m, dev, args.size)
                    result["model_rates"][m] = project_train_rate(
                        step, opt, fake, fake_y, 16, args.model_steps, dev, True
                    )
                del step, opt
                _free(dev)
                _, step, opt = fresh_model(m, dev, args.size)  # its floor: the eager rate at a large batch
                try:
                    result["floor_rates"][m] = project_train_rate(
                        step, opt, fake, fake_y, 128, max(3, args.model_steps // 3), dev, True
                    )
                except torch.OutOfMemoryError:
                    result["skipped"].append(f"floor rate {m}: out of memory at batch 128")
                del step, opt
                _free(dev)
                save()
                print(
                    f"{m}: {result['model_rates'][m]:.0f} images/s at batch 16, "
                    f"{result['floor_rates'].get(m, float('nan')):.0f} at batch 128",
                    flush=True,
                )

        def extras():  # 6. measured before: host-pinned images, the captured step at the large batch, compile, plain
            for p in args.precisions:
                if "host" in args.stores:
                    measure(p, "host", 16, "eager")
                    measure(p, "host", big, "eager")
                measure(p, "GPU", big, "cuda_graph")
            if not args.no_compile:
                measure("bf16", "GPU", 16, "reduce-overhead")
            if result["plain"]:
                return
            if budget.left() < 30:
                result["skipped"].append("plain loop: out of time")
                return
            torch.manual_seed(0)
            model, step, opt = fresh_model("cvm_cervix", dev, args.size)
            result["plain"] = plain_train_rate(
                tmp / "images", step, opt, args.size, 16, args.steps, dev, True, min(args.workers, os.cpu_count() or 1)
            )
            print(f"plain loop bf16 batch 16: {result['plain']:.0f}", flush=True)

        for title, fn in [
            ("step", the_step),
            ("inference", inference),
            ("sharing", sharing),
            ("warm-up", warmup),
            ("per-model", per_model),
            ("extras", extras),
        ]:
            print(f"-- {title} ({budget.left():.0f} s of the budget left)", flush=True)
            section(title, fn)

    project(result)
    result["recommended"] = recommend(result)
    save()
    report(result)
    return result


def resumed(args, result: dict) -> dict:
    """With ``--resume``: the results in ``--json`` of an earlier run on the same card, torch and image size,
    to go on from (what it measured is kept, not measured again); else ``result``."""
    path = Path(args.json) if args.json else None
    if not (args.resume and path and path.exists()):
        return result
    old = json.loads(path.read_text())
    mine, theirs = ({k: r.get(k) for k in ("device", "torch", "size")} for r in (result, old))
    if mine != theirs:
        raise SystemExit(f"--resume: {path} holds a run on {theirs}, this one is on {mine}; give another --json")
    old["concurrent"] = {int(k): v for k, v in old["concurrent"].items()}
    old.update(skipped=[], failed=[], budget_s=old["budget_s"] + args.budget, resumed=old.get("resumed", 0) + 1)
    print(
        f"going on from {path}: {len(old['train'])} training rows, K = {sorted(old['concurrent'])}, "
        f"{len(old['model_rates'])} model rates kept",
        flush=True,
    )
    return old


def best_row(result: dict, batch: int, precision: str = "bf16") -> dict:
    """The fastest training row at ``batch`` in ``precision`` on GPU-resident images (eager if none ran)."""
    rows = [
        r
        for r in result["train"]
        if r["batch"] == batch
        and r["precision"] == precision
        and r["images_on"] == "GPU"
        and r["images_per_s"]
        and r["step"] in ("eager", "cuda_graph")
    ]
    best = max(rows, key=lambda r: r["images_per_s"], default=None)
    if best is None:
        return {"step": "eager", "fused": False, "images_per_s": None}
    return {"step": best["step"], "fused": best["optimizer"] == "AdamW fused", "images_per_s": best["images_per_s"]}


def floor_rate(result: dict, precision: str) -> float | None:
    """The model's floor in ``precision``: its best rate at the largest batch, images on the GPU."""
    rates = [
        r["images_per_s"]
        for r in result["train"]
        if r["precision"] == precision
        and r["images_on"] == "GPU"
        and r["batch"] == result.get("largest_batch")
        and r["images_per_s"]
    ]
    return max(rates, default=None)


def project(result: dict) -> None:
    """The whole plan in GPU-hours at the measured batch-16 rates, against its floor (the large-batch rates)."""
    rates, floors = dict(result["model_rates"]), dict(result["floor_rates"])
    infer = max([r["images_per_s"] for r in result["infer"] if r["precision"] == "bf16"], default=None)
    if not rates.get("cvm_cervix") or not floors.get("cvm_cervix") or not infer:
        result["skipped"].append("the plan's projection: CVM-Cervix's batch-16, floor or inference rate is missing")
        return
    # a model without a floor of its own: CVM-Cervix's ratio of floor to batch-16 rate
    ratio = floors["cvm_cervix"] / rates["cvm_cervix"]
    floors = {m: floors.get(m, r * ratio) for m, r in rates.items()}
    result["paper_gpu_hours"], result["paper_runs"] = paper_plan_hours(rates, infer)
    result["paper_floor_hours"], _ = paper_plan_hours(floors, infer)


# What a default needs to be changed: a margin past the run-to-run spread of such measurements
# (BENCHMARKS.md: the same row differed by 1.6x between two machines of one kind, 1.1x within one).
FASTER = 1.10


def recommend(r: dict) -> dict:
    """The defaults these numbers argue for, each with its reason; None where the rows it needs did not run."""

    def rate(batch, step, optimizer="AdamW", precision="bf16"):
        return next(
            (
                t["images_per_s"]
                for t in r["train"]
                if (t["precision"], t["images_on"], t["batch"], t["step"], t["optimizer"])
                == (precision, "GPU", batch, step, optimizer)
                and t["images_per_s"]
            ),
            None,
        )

    out: dict = {}
    eager, captured = rate(16, "eager"), rate(16, "cuda_graph")
    if eager and captured:
        ratio = captured / eager
        out["train.step"] = {
            "value": "cuda_graph" if ratio >= FASTER else "eager",
            "why": f"captured {captured:.0f} against eager {eager:.0f} images/s at batch 16 in bf16 "
            f"({ratio:.2f}x; a default changes at {FASTER:.2f}x)",
        }
    fused = rate(16, "cuda_graph" if out.get("train.step", {}).get("value") == "cuda_graph" else "eager", "AdamW fused")
    base = captured if out.get("train.step", {}).get("value") == "cuda_graph" else eager
    if fused and base:
        out["fused AdamW"] = {
            "value": fused / base >= FASTER,
            "why": f"{fused:.0f} against {base:.0f} images/s with the step above ({fused / base:.2f}x)",
        }
    shared = {int(k): v for k, v in r["concurrent"].items()}
    if 1 in shared and len(shared) > 1:
        best = max(v["images_per_s"] for v in shared.values())
        # the fewest runs per GPU that get within 10% of the most it gave: more only add memory and CPU cores
        k = min(k for k, v in shared.items() if v["images_per_s"] >= best / FASTER)
        out["gpu.jobs_per_device"] = {
            "value": k,
            "why": f"{shared[k]['images_per_s']:.0f} images/s with {k} runs "
            f"against {shared[1]['images_per_s']:.0f} with one (most: {best:.0f}); "
            f"{shared[k]['peak_mib_per_run']:,.0f} MiB and "
            f"{shared[k]['cpu_cores'] / k:.1f} CPU cores per run",
        }
    warm = {w["cudnn_benchmark"]: w for w in r["warmup"]}
    if True in warm and False in warm:
        on, off = warm[True]["mean_first_step_s"], warm[False]["mean_first_step_s"]
        out["cuDNN autotuning on small images"] = {
            "value": not (on >= off * FASTER),
            "why": f"first step after {on:.1f} s with it, {off:.1f} s without ({warm[True]['runs']} jobs at 32 px)",
        }
    return out


def report(r: dict) -> None:
    plain = r.get("plain")
    print(
        f"\n{r['device']}, torch {r['torch']}, CVM-Cervix at {r['size']} px, {r['images']} synthetic images"
        f"{' (the combined set' + chr(39) + 's size)' if r['images'] >= 8838 else ''}\n"
    )
    floors = {p: floor_rate(r, p) for p in ("fp32", "bf16")}
    rows = [
        [
            t["precision"] + (" autocast" if t["precision"] == "bf16" else ""),
            t["images_on"],
            t["batch"],
            t["step"],
            t["optimizer"],
            f"{t['images_per_s']:.0f}" if t["images_per_s"] else "out of memory",
            f"{t['images_per_s'] / plain:.2f}" if t["images_per_s"] and plain else "–",
            f"{100 * t['images_per_s'] / floors[t['precision']]:.0f}%"
            if t["images_per_s"] and floors[t["precision"]]
            else "–",
        ]
        for t in r["train"]
    ]
    if plain:
        rows.append(
            ["bf16 autocast", "plain ImageFolder + DataLoader", 16, "eager", "AdamW", f"{plain:.0f}", "1.00", "–"]
        )
    print(
        table(
            rows,
            [
                "training",
                "images on",
                "batch",
                "step",
                "optimizer",
                "images/s",
                "× plain",
                f"of the floor (batch {r.get('largest_batch')}, same precision)",
            ],
        )
    )
    if r["infer"]:
        print()
        print(
            table(
                [[i["precision"], i["batch"], f"{i['images_per_s']:.0f}"] for i in r["infer"]],
                ["inference", "batch", "images/s"],
            )
        )
    if r["concurrent"]:
        print()
        one = r["concurrent"].get(1) or next(iter(r["concurrent"].values()))
        print(
            table(
                [
                    [
                        k,
                        f"{v['images_per_s']:.0f}",
                        f"{v['images_per_s'] / one['images_per_s']:.2f}",
                        f"{min(v['per_run_images_per_s']):.0f}–{max(v['per_run_images_per_s']):.0f}",
                        f"{v['peak_mib_per_run']:,.0f}",
                        f"{v['device_in_use_mib']:,.0f}" if v["device_in_use_mib"] is not None else "–",
                        f"{v['cpu_cores']:.1f}",
                        f"{v['first_step_s']:.1f}",
                    ]
                    for k, v in r["concurrent"].items()
                ],
                [
                    f"runs sharing the GPU (bf16, batch 16, {r['sharing_step']['step']} step)",
                    "images/s in all",
                    "× one run",
                    "images/s per run",
                    "peak MiB per run (PyTorch)",
                    "device MiB in use (all runs)",
                    "CPU cores busy (all runs)",
                    "first step after (s, slowest run)",
                ],
            )
        )
    if r["warmup"]:
        print()
        print(
            table(
                [
                    [
                        f"{w['runs']} at {w['size']} px",
                        "on" if w["cudnn_benchmark"] else "off",
                        f"{w['import_s']:.1f}",
                        f"{w['mean_first_step_s']:.1f}",
                        f"{w['first_step_s']:.1f}",
                        f"{w['ready_s']:.1f}",
                    ]
                    for w in r["warmup"]
                ],
                [
                    "processes started together",
                    "cuDNN autotuning",
                    "imports done (s)",
                    "first step (s, mean)",
                    "first step (s, slowest)",
                    "warmed up (s, slowest)",
                ],
            )
        )
    if len(r["model_rates"]) > 1:
        print()
        print(
            table(
                [
                    [
                        m,
                        f"{v:.0f}",
                        f"{r['floor_rates'][m]:.0f}" if m in r["floor_rates"] else "–",
                        f"{100 * v / r['floor_rates'][m]:.0f}%" if r["floor_rates"].get(m) else "–",
                    ]
                    for m, v in r["model_rates"].items()
                ],
                ["model (bf16)", "images/s at batch 16", "at its large batch (floor)", "batch 16 of the floor"],
            )
        )
    print()
    for p, floor in floors.items():
        best = best_row(r, 16, p)["images_per_s"]
        if best and floor:
            print(
                f"{p}: batch 16 at {best:.0f} images/s is {100 * best / floor:.0f}% of the floor "
                f"({floor:.0f} images/s at batch {r['largest_batch']}; goal: 70%)"
            )
    if r.get("paper_gpu_hours"):
        step = best_row(r, 16)
        print(
            f"config/paper.yaml ({r['paper_runs']} runs, each model at its own measured batch-16 bf16 rate, "
            f"{step['step']} step{', fused AdamW' if step['fused'] else ''}): {r['paper_gpu_hours']:.2f} GPU-hours; "
            f"its floor (each model at its large-batch rate): {r['paper_floor_hours']:.2f} GPU-hours; "
            f"{r['paper_gpu_hours'] / r['paper_floor_hours']:.2f}× the floor (goal: 1.3×)"
        )
    if r.get("recommended"):
        print("\nWhat the numbers say for the defaults:")
        for key, rec in r["recommended"].items():
            print(f"- {key}: {rec['value']} ({rec['why']})")
    if r["skipped"]:
        print("skipped: " + "; ".join(r["skipped"]))
    if r["failed"]:
        print("FAILED: " + "; ".join(r["failed"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8844, help="synthetic images (the combined set has 8,838)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per configuration")
    parser.add_argument("--seconds", type=float, default=8, help="timed seconds of the runs sharing the GPU")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed eager steps before each timed training configuration"
    )
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the plain loop")
    parser.add_argument("--budget", type=float, default=420, help="seconds; later measurements are skipped past it")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile(mode='reduce-overhead')")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        default=["fp32", "bf16"],
        help="training precisions measured",
    )
    parser.add_argument(
        "--stores",
        nargs="+",
        choices=["GPU", "host"],
        default=["GPU", "host"],
        help="where the training images are kept: on the GPU or pinned in host memory",
    )
    parser.add_argument("--no-per-model", action="store_true", help="project every model at CVM-Cervix's rate")
    parser.add_argument("--cpu-size", type=int, default=64, help="without CUDA: image size of the CPU comparison")
    parser.add_argument("--cpu-images", type=int, default=352)
    parser.add_argument("--cpu-steps", type=int, default=12)
    parser.add_argument("--cpu-repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here (rewritten after every section)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on from the results in --json of an earlier run on this card (a cut one, say): "
        "keep what it measured and measure the rest",
    )
    parser.add_argument("--max-batch", type=int, default=1024, help="largest batch tried")
    parser.add_argument("--concurrent", type=int, nargs="+", default=[1, 2, 4, 8], help="runs sharing the GPU")
    parser.add_argument("--models", nargs="+", help="models measured for the projection (default: the paper's)")
    parser.add_argument("--model-steps", type=int, default=10, help="timed steps per model of the projection")
    parser.add_argument(
        "--device",
        default="cuda",
        help="cuda; cpu runs the GPU benchmark's code on the CPU at a tiny size (a smoke test)",
    )
    for flag, kind in [
        ("--worker", str),
        ("--batch", int),
        ("--step", str),
        ("--runs", int),
        ("--barrier", str),
        ("--t0", float),
        ("--cudnn-benchmark", int),
    ]:  # a concurrent run's own arguments
        parser.add_argument(flag, type=kind, help=argparse.SUPPRESS)
    parser.add_argument("--fused", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.device == "cpu":
        result = gpu_benchmark(args)
    elif not torch.cuda.is_available():
        print("No CUDA device: the GPU benchmark has not run. The two training loops on the CPU instead:\n")
        result = cpu_comparison(args)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    else:
        result = gpu_benchmark(args)
    return 1 if result.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
