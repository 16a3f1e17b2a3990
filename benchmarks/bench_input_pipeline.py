"""Input pipeline: decode-once cache on the device vs. torchvision ImageFolder + DataLoader per epoch.

Measures the seconds one training epoch spends on input (no model), and a whole epoch with a small
model, for both approaches on the same images. Usage:

    .venv/bin/python benchmarks/bench_input_pipeline.py IMAGE_FOLDER [--size 224] [--epochs 3] [--workers 2]

IMAGE_FOLDER is any <class>/<image> folder (e.g. the CRIC crops). Prints a Markdown table row set.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torchvision import transforms

from cvm_cervix.data import build_cache, list_dataset
from cvm_cervix.engine import resolve_device, scale, to_device_images
from cvm_cervix.models import create_model


def plain_loader(root: str, size: int, batch: int, workers: int):
    tf = transforms.Compose(
        [transforms.Resize((size, size)), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
    )  # the model normalises its input itself
    data = torchvision.datasets.ImageFolder(root, transform=tf)
    return torch.utils.data.DataLoader(
        data, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )


def cached_batches(images: torch.Tensor, labels: torch.Tensor, batch: int):
    order = torch.randperm(len(images), device=images.device)
    for i in range(0, len(images), batch):
        idx = order[i : i + batch]
        x = scale(images[idx])
        flip = torch.rand(len(idx), device=x.device) < 0.5
        yield torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), labels[idx]


def epoch_seconds(batches, step=None) -> float:
    start = time.perf_counter()
    for x, y in batches:
        if step is not None:
            step(x, y)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="shufflenet_v2_x0_5")
    args = parser.parse_args()
    dev = resolve_device("auto")

    listing = list_dataset("imagefolder", args.root)
    classes = sorted({r["class"] for r in listing.records})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        array = build_cache([r["path"] for r in listing.records], args.size, Path(tmp) / "cache.npy")
        cache_build = time.perf_counter() - t0
    images = to_device_images(array, dev)
    labels = torch.tensor([classes.index(r["class"]) for r in listing.records], device=dev)
    loader = plain_loader(args.root, args.size, args.batch, args.workers)

    model = create_model(args.model, len(classes), args.size).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)

    def step(x, y):
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    rows = []
    for name, batches in (
        ("plain ImageFolder + DataLoader", lambda: loader),
        ("decode-once cache, flip/normalise on device", lambda: cached_batches(images, labels, args.batch)),
    ):
        epoch_seconds(batches())  # warm-up: worker start, page cache
        data_only = min(epoch_seconds(batches()) for _ in range(args.epochs))
        with_model = min(epoch_seconds(batches(), step) for _ in range(max(1, args.epochs - 1)))
        rows.append((name, data_only, with_model))

    device = (
        torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    )
    print(
        f"{len(images)} images from {args.root}, {args.size} px, batch {args.batch}, {args.workers} workers, "
        f"model {args.model}, {device}; cache built once in {cache_build:.1f} s"
    )
    print("| input pipeline | data only, s/epoch | with model, s/epoch |")
    print("|---|---|---|")
    for name, data_only, with_model in rows:
        print(f"| {name} | {data_only:.2f} | {with_model:.2f} |")


if __name__ == "__main__":
    main()
