"""GPU benchmark of CVM-Cervix: the workflow's training step against a plain timm + torchvision loop.

One command, a few minutes on one GPU, with nothing but torch, torchvision, timm, numpy, pandas,
safetensors and tqdm installed (run it from the repository root):

    PYTHONPATH=src python3 benchmarks/gpu.py [--images 8844] [--size 224] [--budget 420] [--json out.json]

On a synthetic set of the combined set's size (written as 100 px PNG files, the CRIC crop size) it
measures, for CVM-Cervix at ``--size``:
- training images/s of the workflow's step (``cvm_cervix.train.train_epoch``: uint8 cache, flips
  and normalisation on the device, no per-step read-back) in float32 and bf16 autocast, with and
  without torch.compile, images resident on the GPU and pinned on the host, at batch 16 and at the
  largest batch that fits;
- inference images/s (``cvm_cervix.engine.predict``) in float32 and bf16;
- K = 1, 2, 4 training processes sharing one GPU (their summed images/s);
- the same model trained by a plain loop: ``ImageFolder`` + ``DataLoader`` decoding the PNG files
  every epoch, ``loss.item()`` every step, as most training scripts do; every rate is also given
  as a ratio to it;
- the paper's whole plan (``config/paper.yaml``) projected in GPU-hours from these rates and the
  paper's split sizes, each model at its own measured rate.

It prints Markdown tables for BENCHMARKS.md. Without CUDA it says so, runs the CPU side-by-side
comparison of the two training loops at a small size instead (``--cpu-size``), and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
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
            Path(root) / name / f"{index:05d}.png", format="PNG")


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


def project_train_rate(model, optimizer, images, labels, batch, steps, dev, amp, warmup=3, captured=False) -> float:
    """Training images/s of ``cvm_cervix.train.train_epoch`` over ``steps`` batches after ``warmup``; with
    ``captured``, of the step replayed as a CUDA graph (``cvm_cervix.step.CapturedStep``: capture happens
    in the warm-up, which then needs more than its 3 eager steps)."""
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    n = len(images)
    gen = torch.Generator().manual_seed(0)

    def batches(k):
        order = torch.randperm(max(n, batch * k), generator=gen) % n
        return [order[i * batch:(i + 1) * batch].to(images.device) for i in range(k)]

    step = CapturedStep(model, optimizer, scaler, images, labels, 1, dev, amp, batch_size=batch) if captured else None
    warmup = max(warmup, WARMUP_STEPS + 2) if captured else warmup
    model.train()
    loss, _, _, _, _ = train_epoch(model, optimizer, scaler, images, labels, batches(warmup), 1, dev, amp, step=step)
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
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers,
                                         pin_memory=dev.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
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


def fresh_model(name, dev, size, compile_=False, capturable=False):
    model = create_model(name, len(CLASSES), size).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    step = torch.compile(model) if compile_ else model
    return model, step, torch.optim.AdamW(model.parameters(), lr=2e-4, **({"capturable": True} if capturable else {}))


def largest_batch(images, labels, dev, amp, size, start=16, limit=1024) -> int:
    """Largest power-of-two batch from ``start`` whose training step fits in GPU memory."""
    fits, batch = start, start
    while batch <= limit:
        try:
            model, step, opt = fresh_model("cvm_cervix", dev, size)
            project_train_rate(step, opt, images, labels, batch, 1, dev, amp, warmup=1)
            fits = batch
            batch *= 2
        except torch.OutOfMemoryError:
            break
        finally:
            model = step = opt = None
            _free(dev)
    return fits


def worker(cache: str, batch: int, seconds: float, size: int, device: str = "cuda") -> None:
    """One of K concurrent training processes: print its images/s over ``seconds`` as JSON."""
    dev = torch.device(device)
    # the CPU smoke run: K processes on a few cores, one thread each (oversubscribed OpenMP threads
    # spin against each other) and one step per timed call, enough to run the code
    steps = 20 if dev.type == "cuda" else 1
    if dev.type != "cuda":
        torch.set_num_threads(1)
    array = np.load(cache, mmap_mode="r")
    images = torch.from_numpy(np.ascontiguousarray(array)).to(dev)
    labels = torch.arange(len(images), device=dev) % len(CLASSES)
    model, step, opt = fresh_model("cvm_cervix", dev, size)
    project_train_rate(step, opt, images, labels, batch, 2, dev, True, warmup=2)
    seen, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rate = project_train_rate(step, opt, images, labels, batch, steps, dev, True, warmup=0)
        seen += steps * batch
    print(json.dumps({"images_per_s": seen / (time.perf_counter() - start), "last": rate}), flush=True)


def concurrent_rate(k: int, cache: Path, batch: int, seconds: float, size: int, device: str) -> float:
    cmd = [sys.executable, __file__, "--worker", str(cache), "--batch", str(batch), "--seconds", str(seconds),
           "--size", str(size), "--device", device]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
             for _ in range(k)]
    rates = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 300)
        rates.append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
    return sum(rates)


def paper_plan_hours(rates: dict[str, float], infer: float) -> tuple[float, int]:
    """GPU-hours of every run config/paper.yaml plans: epochs × (train / train rate + val / infer rate)."""
    import yaml

    from cvm_cervix.config import all_runs, run_settings, split_recipe, validate_config

    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate_config(config, require_roots=False)
    paper = yaml.safe_load((REPO / "src" / "cvm_cervix" / "paper_results.yaml").read_text())
    key_of = {}  # each dataset's counts: the paper's table of the first experiment that reproduces one
    for e in config["experiments"].values():
        if e.get("paper"):
            key_of.setdefault(e["dataset"], e["paper"])
    seconds = 0.0
    runs = all_runs(config)
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
        loops = {"plain": lambda m, o: plain_train_rate(root, m, o, args.cpu_size, 16, args.cpu_steps, dev, False,
                                                         args.workers),
                 "workflow": lambda m, o: project_train_rate(m, o, images, y, 16, args.cpu_steps, dev, False)}
        models = {}
        for name in loops:
            torch.manual_seed(0)
            models[name] = fresh_model("cvm_cervix", dev, args.cpu_size)[1:]
        out = {name: 0.0 for name in loops}
        for _ in range(args.cpu_repeats):  # alternate the loops, keep each one's best: a fair side-by-side
            for name, fn in loops.items():
                out[name] = max(out[name], fn(*models[name]))
    print(f"CPU ({platform.machine()}, {torch.get_num_threads()} threads), CVM-Cervix at {args.cpu_size} px, batch 16, "
          f"{args.cpu_images} synthetic images, best of {args.cpu_repeats} × {args.cpu_steps} timed steps, "
          f"{args.workers} DataLoader workers, "
          f"torch {torch.__version__}")
    print(table([["plain ImageFolder + DataLoader, loss.item() per step", f"{out['plain']:.1f}", "1.00"],
                 ["workflow (decode-once cache, device-side flips, one read-back per epoch)", f"{out['workflow']:.1f}",
                  f"{out['workflow'] / out['plain']:.2f}"]],
                ["training loop", "images/s", "× plain"]))
    return {"cpu": out, "size": args.cpu_size, "threads": torch.get_num_threads()}


def gpu_benchmark(args) -> dict:
    start = time.monotonic()
    left = lambda: args.budget - (time.monotonic() - start)  # noqa: E731
    dev = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()}), smoke run"
    result: dict = {"device": name, "torch": torch.__version__, "size": args.size, "images": args.images, "train": [],
                    "infer": [], "concurrent": {}, "skipped": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        t0 = time.perf_counter()
        paths, labels = make_images(root, args.images, 100, workers=min(16, os.cpu_count() or 1))
        cache_path = Path(tmp) / "cache.npy"
        array = build_cache(paths, args.size, cache_path, threads=min(16, os.cpu_count() or 1))
        print(f"{len(paths)} synthetic images written and cached at {args.size} px in {time.perf_counter() - t0:.0f} s",
              flush=True)
        y = torch.from_numpy(labels).to(dev)
        resident = torch.from_numpy(array).to(dev)
        pinned = torch.from_numpy(array).pin_memory() if dev.type == "cuda" else torch.from_numpy(array)
        big = largest_batch(resident, y, dev, True, args.size, limit=args.max_batch)
        result["largest_batch"] = big
        print(f"largest batch that fits (bf16 autocast): {big}", flush=True)

        def measure(precision, store, batch, mode):
            amp = precision == "bf16"
            model, step, opt = fresh_model("cvm_cervix", dev, args.size, mode == "compile", mode == "cuda_graph")
            images = resident if store == "GPU" else pinned
            labels_ = y if store == "GPU" else y.cpu()
            try:
                rate = project_train_rate(step, opt, images, labels_, batch, args.steps, dev, amp,
                                          warmup=10 if mode == "compile" else args.warmup, captured=mode == "cuda_graph")
            except torch.OutOfMemoryError:
                rate = None
            _free(dev)
            return rate

        stores = {"GPU": "GPU", "host": "host, pinned"}
        # the captured step first: it is what this benchmark is for, and the budget may end the list early
        configs = [(p, "GPU", 16, "cuda_graph") for p in args.precisions] if dev.type == "cuda" else []
        if dev.type != "cuda":
            result["skipped"].append("captured step (cuda_graph): needs CUDA")
        configs += [(p, stores[s], b, "eager") for p in args.precisions for s in args.stores for b in (16, big)]
        configs += [(p, "GPU", big, "cuda_graph") for p in args.precisions] if dev.type == "cuda" else []
        configs += [("bf16", "GPU", 16, "compile"), ("bf16", "GPU", big, "compile")] if not args.no_compile else []
        for precision, store, batch, mode in configs:
            if left() < 60:
                result["skipped"].append(f"train {precision} {store} {batch} {mode}")
                continue
            rate = measure(precision, store, batch, mode)
            result["train"].append({"precision": precision, "images_on": store, "batch": batch, "step": mode,
                                    "compile": mode == "compile", "images_per_s": rate})
            print(f"train {precision} {store} batch {batch} {mode}: {rate}", flush=True)

        model, _, _ = fresh_model("cvm_cervix", dev, args.size)
        for precision in ("fp32", "bf16"):
            for batch in (64, 256):
                rate = infer_rate(model, resident, batch, dev, precision == "bf16")
                result["infer"].append({"precision": precision, "batch": batch, "images_per_s": rate})
                print(f"infer {precision} batch {batch}: {rate:.0f}", flush=True)
        del model
        _free(dev)

        torch.manual_seed(0)
        model, step, opt = fresh_model("cvm_cervix", dev, args.size)
        result["plain"] = plain_train_rate(root, step, opt, args.size, 16, args.steps, dev, True,
                                           min(args.workers, os.cpu_count() or 1))
        print(f"plain loop bf16 batch 16: {result['plain']:.0f}", flush=True)
        del model, step, opt
        _free(dev)

        if left() > 150:
            for k in args.concurrent:
                if left() < 60:
                    result["skipped"].append(f"concurrent K={k}")
                    continue
                result["concurrent"][k] = concurrent_rate(k, cache_path, 16, args.seconds, args.size, args.device)
                print(f"K={k} concurrent runs at batch 16: {result['concurrent'][k]:.0f} images/s in all", flush=True)
        else:
            result["skipped"].append("concurrent runs")

    def best(batch, steps=("eager", "cuda_graph")):
        return max([r["images_per_s"] or 0 for r in result["train"]
                    if r["batch"] == batch and r["precision"] == "bf16" and r["step"] in steps] or [0])

    rates = {"cvm_cervix": best(16)}
    floor_rates = {"cvm_cervix": best(big, ("eager",))}
    if not args.no_per_model and left() > 90:
        import yaml

        models = set(args.models or {m for e in yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
                                     ["experiments"].values() for m in e["models"]})
        fake = torch.randint(0, 255, (64, 3, args.size, args.size), dtype=torch.uint8, device=dev)
        fake_y = torch.arange(64, device=dev) % len(CLASSES)
        from cvm_cervix.models import get_model_spec

        for m in sorted(models - {"cvm_cervix"}):
            if left() < 30 or get_model_spec(m).min_img_size > args.size:
                result["skipped"].append(f"per-model rate {m}")
                continue
            captured = dev.type == "cuda"  # the step the paper's runs would use, if it measures faster
            _, step, opt = fresh_model(m, dev, args.size, capturable=captured)
            try:
                rates[m] = project_train_rate(step, opt, fake, fake_y, 16, args.model_steps, dev, True,
                                              captured=captured)
            except Exception as err:  # a model whose step cannot be captured: its eager rate
                print(f"{m}: captured step failed ({type(err).__name__}: {err}); eager instead", flush=True)
                _, step, opt = fresh_model(m, dev, args.size)
                rates[m] = project_train_rate(step, opt, fake, fake_y, 16, args.model_steps, dev, True)
            del step, opt
            _free(dev)
            if left() > 30:  # the model's floor: its eager rate at a large batch
                _, step, opt = fresh_model(m, dev, args.size)
                big_fake = fake.repeat(2, 1, 1, 1)
                try:
                    floor_rates[m] = project_train_rate(step, opt, big_fake, fake_y.repeat(2), 128,
                                                        max(3, args.model_steps // 3), dev, True)
                except torch.OutOfMemoryError:
                    result["skipped"].append(f"floor rate {m} (out of memory at batch 128)")
                del step, opt
                _free(dev)
    result["model_rates"], result["floor_rates"] = rates, floor_rates
    infer = max(r["images_per_s"] for r in result["infer"] if r["precision"] == "bf16")
    result["paper_gpu_hours"], result["paper_runs"] = paper_plan_hours(rates, infer)
    # the floor: every run at its model's large-batch rate (a model not measured: CVM-Cervix's ratio of the two)
    ratio = floor_rates["cvm_cervix"] / rates["cvm_cervix"] if rates["cvm_cervix"] else 1.0
    floor = {m: floor_rates.get(m, r * ratio) for m, r in rates.items()}
    result["paper_floor_hours"], _ = paper_plan_hours(floor, infer)
    report(result)
    return result


def report(r: dict) -> None:
    plain = r["plain"]
    print(f"\n{r['device']}, torch {r['torch']}, CVM-Cervix at {r['size']} px, {r['images']} synthetic images"
          f"{' (the combined set' + chr(39) + 's size)' if r['images'] >= 8838 else ''}\n")
    floors = {p: max([t["images_per_s"] or 0 for t in r["train"] if t["precision"] == p and t["step"] == "eager"
                      and t["images_on"] == "GPU" and t["batch"] == r["largest_batch"]] or [0]) for p in ("fp32", "bf16")}
    rows = [[t["precision"] + (" autocast" if t["precision"] == "bf16" else ""), t["images_on"], t["batch"],
             t["step"], f"{t['images_per_s']:.0f}" if t["images_per_s"] else "out of memory",
             f"{t['images_per_s'] / plain:.2f}" if t["images_per_s"] else "–",
             f"{100 * t['images_per_s'] / floors[t['precision']]:.0f}%" if t["images_per_s"] and floors[t["precision"]]
             else "–"] for t in r["train"]]
    rows.append(["bf16 autocast", "plain ImageFolder + DataLoader", 16, "eager", f"{plain:.0f}", "1.00", "–"])
    print(table(rows, ["training", "images on", "batch", "step", "images/s", "× plain",
                       f"of the floor (eager, batch {r['largest_batch']}, same precision)"]))
    print()
    print(table([[i["precision"], i["batch"], f"{i['images_per_s']:.0f}"] for i in r["infer"]],
                ["inference", "batch", "images/s"]))
    if r["concurrent"]:
        print()
        one = r["concurrent"].get(1) or next(iter(r["concurrent"].values()))
        print(table([[k, f"{v:.0f}", f"{v / one:.2f}"] for k, v in r["concurrent"].items()],
                    ["runs sharing the GPU (bf16, batch 16)", "images/s in all", "× one run"]))
    best = max(t["images_per_s"] or 0 for t in r["train"] if t["batch"] == 16)
    print(f"\n100 epochs of 5,308 combined-set training images at batch 16: {100 * 5308 / best / 60:.1f} min "
          f"(best batch-16 rate, {best:.0f} images/s)")
    print(f"config/paper.yaml ({r['paper_runs']} runs, 100 epochs each, every model at its own measured batch-16 bf16 "
          f"rate, captured step where it ran): {r['paper_gpu_hours']:.2f} GPU-hours; its floor (each model at its "
          f"large-batch rate): {r['paper_floor_hours']:.2f} GPU-hours; "
          f"{r['paper_gpu_hours'] / r['paper_floor_hours']:.2f}× the floor (goal: 1.3×)")
    if r["skipped"]:
        print("skipped for time: " + "; ".join(r["skipped"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8844, help="synthetic images (the combined set has 8,838)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per configuration")
    parser.add_argument("--seconds", type=float, default=20, help="timed seconds of each concurrent run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed eager steps before each timed training configuration")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the plain loop")
    parser.add_argument("--budget", type=float, default=420, help="seconds; later sections are skipped past it")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="training precisions measured")
    parser.add_argument("--stores", nargs="+", choices=["GPU", "host"], default=["GPU", "host"],
                        help="where the training images are kept: on the GPU or pinned in host memory")
    parser.add_argument("--no-per-model", action="store_true", help="project every model at CVM-Cervix's rate")
    parser.add_argument("--cpu-size", type=int, default=64, help="without CUDA: image size of the CPU comparison")
    parser.add_argument("--cpu-images", type=int, default=352)
    parser.add_argument("--cpu-steps", type=int, default=12)
    parser.add_argument("--cpu-repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--max-batch", type=int, default=1024, help="largest batch tried")
    parser.add_argument("--concurrent", type=int, nargs="+", default=[1, 2, 4, 8], help="runs sharing the GPU")
    parser.add_argument("--models", nargs="+", help="models measured for the projection (default: the paper's)")
    parser.add_argument("--model-steps", type=int, default=10, help="timed steps per model of the projection")
    parser.add_argument("--device", default="cuda",
                        help="cuda; cpu runs the GPU benchmark's code on the CPU at a tiny size (a smoke test)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.batch, args.seconds, args.size, args.device)
        return 0
    if args.device == "cpu":
        result = gpu_benchmark(args)
    elif not torch.cuda.is_available():
        print("No CUDA device: the GPU benchmark has not run. The two training loops on the CPU instead:\n")
        result = cpu_comparison(args)
    else:
        result = gpu_benchmark(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
