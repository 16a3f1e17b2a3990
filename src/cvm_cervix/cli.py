"""The ``cvm-cervix`` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._io import shown_path
from .errors import CvmError


def _cmd_models(args) -> int:
    from .models import get_model_spec, model_names

    for name in model_names():
        if args.verbose:
            spec = get_model_spec(name)
            print(f"{name}\t{spec.paper_name}\t{spec.source}\tmin {spec.min_img_size}px\t{spec.note}")
        else:
            print(name)
    return 0


def _cmd_manifest(args) -> int:
    import pandas as pd

    from .data import assign_splits, conversions, list_dataset, records_frame, split_counts, summarize

    _check_writable(args.output)
    spec = {
        "kind": args.kind,
        "task": args.task,
        "layout": args.layout,
        "crop_size": args.crop_size,
        "unreadable": "skip" if args.skip_unreadable else "error",
    }
    import tempfile

    # CRIC crops cut from the full images: --workdir, else beside -o, else a temporary folder; never the dataset
    scratch = tempfile.TemporaryDirectory(prefix="cvm_cervix_crops_") if not (args.workdir or args.output) else None
    workdir = Path(args.workdir) if args.workdir else Path(args.output).parent if args.output else Path(scratch.name)
    try:
        listing = list_dataset(args.kind, args.root, spec, workdir)
        frame = records_frame(listing, Path(args.root).name, threads=args.threads)
    finally:
        if scratch is not None:
            scratch.cleanup()
    from .labels import check_distinct_classes

    # as the workflow's prepare step checks them: HSIL and hsil would be two classes every reader takes for one
    check_distinct_classes(list(dict.fromkeys([*listing.classes, *frame["class"]])), f"dataset at {args.root}")
    converted = conversions(frame)
    frame = assign_splits(frame, args.fractions, args.seed, args.split, dataset=str(args.root))
    summary = summarize(frame, listing.classes, listing.skipped, converted)
    table = split_counts(frame, listing.classes)
    print(
        f"{args.kind} dataset at {args.root}: {len(frame)} images, {len(listing.classes)} classes ({args.split} split)"
    )
    with pd.option_context("display.width", 200):
        print(table.to_string())
    dup = summary["duplicates"]
    print(f"exact duplicates: {dup['duplicate_sets']} sets ({dup['duplicate_images']} files); copies share a split")
    for conflict in dup["label_conflicts"]:
        print(
            f"warning: identical images carry different classes {conflict['classes']}: {' = '.join(conflict['paths'])}"
        )
    for item in summary["skipped"]:
        print(f"left out: {item['path']}: {item['reason']}")
    for item in summary["converted"]:
        print(f"converted: {item['path']}: {item['how']}")
    if args.output:
        from ._io import write_csv

        write_csv(args.output, frame)
        print(f"manifest written to {args.output}")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def _whole(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least {minimum}")
        return value

    return parse


def _check_writable(path: str | None) -> None:
    """Fail before any work when ``-o`` cannot be written, instead of after it."""
    if not path:
        return
    import os
    import tempfile

    target = Path(path)
    shown = shown_path(path)
    if target.is_dir():
        raise CvmError(f"-o {shown} is a folder; give a file name such as {shown_path(target / 'out.csv')}")
    if target.exists() and not target.is_file():  # a FIFO or /dev/stdout: written through
        if not os.access(target, os.W_OK):
            raise CvmError(f"-o {shown} cannot be written (no permission); choose a writable path")
        return
    folder = target.resolve().parent if target.is_symlink() else target.parent
    try:  # really make the folder and a file in it: permission bits say nothing to root, or under /proc
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        if target.exists() and not os.access(target, os.W_OK):
            raise PermissionError(target)
    except OSError as err:
        raise CvmError(
            f"-o {shown} cannot be written ({err.strerror or 'no permission'} in {shown_path(folder)}); "
            "choose a writable path"
        ) from None


def _image_files(inputs: list[str]) -> list[Path]:
    from .data._adapters import IMAGE_EXTENSIONS

    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(
                p
                for p in item.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            )
        elif item.is_file():
            files.append(item)
        else:
            raise CvmError(f"{item} does not exist; give image files or folders of images")
    if not files:
        raise CvmError(f"no images found in {', '.join(inputs)} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def _check_not_read(output: str | None, run: str, images: list[Path]) -> None:
    """``-o`` never names what the command reads: a file of the run or exported folder (its weights, its
    record), or one of the images (through a link too)."""
    if not output:
        return
    import os

    target = Path(os.path.realpath(output))
    folder = Path(os.path.realpath(run))
    folder = folder.parent if folder.is_file() else folder
    if target == folder or folder in target.parents:
        raise CvmError(
            f"-o {shown_path(output)} is inside {shown_path(run)}, the run it predicts with: writing there could "
            "replace the model it reads; write the predictions elsewhere"
        )
    if any(os.path.realpath(f) == str(target) for f in images):
        raise CvmError(f"-o {shown_path(output)} is one of the images to predict; write the predictions elsewhere")


def _cmd_predict(args) -> int:
    import torch

    from .compress import Predictor
    from .engine import resolve_device
    from .predict import Combined, predict_files, write_predictions
    from .review import Review, write_review

    for target in (args.output, args.review):
        for run in args.run:
            _check_not_read(target, run, [])
        _check_writable(target)
    resolve_device(args.device, key="--device")  # a GPU asked for on the command line is named as such
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Combined([Predictor(run, args.precision, args.device) for run in args.run], tta=args.tta)
    files = _image_files(args.images)
    for target in (args.output, args.review):
        for run in args.run:
            _check_not_read(target, run, files)
    review = Review(args.review_max) if args.review else None
    rows = predict_files(
        predictor,
        files,
        batch_size=args.batch_size,
        coverage=args.coverage,
        operating_point=args.operating_point,
        skip_unreadable=args.skip_unreadable,
        workers=args.workers,
        review=review,
    )
    summary = write_predictions(rows, Path(args.output) if args.output else None)
    if review is not None:
        write_review(Path(args.review), review, summary, predictor.classes, " + ".join(args.run), args.precision)
    per_class = ", ".join(f"{c} {n}" for c, n in summary["per_class"].items())
    where = f" written to {shown_path(args.output)}" if args.output else ""
    what = predictor.info["model"] + (f", ensemble of {len(args.run)} runs" if len(args.run) > 1 else "")
    what += ", test-time flips" if args.tta else ""
    line = f"{summary['images']} predictions{where} ({args.precision}, {what}): {per_class}"
    if summary["referred"] is not None:
        share = summary["referred"] / summary["images"] if summary["images"] else 0.0
        line += f"; referred at coverage {summary['coverage']:g}: {summary['referred']} ({100 * share:.1f}%)"
    if summary["temperature"]:
        line += f"; probabilities temperature-scaled (T = {summary['temperature']:.2f}, prob_T_ columns)"
    if summary["stain_normalization"] != "none":
        line += f"; stains mapped to the run's {summary['stain_normalization']} reference"
        if summary["stain_unmapped"]:
            line += f" ({summary['stain_unmapped']} with too few stained pixels classified as decoded)"
    if summary["unreadable"]:
        line += f"; {len(summary['unreadable'])} unreadable, left out: {', '.join(summary['unreadable'][:5])}"
    if args.review:
        line += f"; review page {shown_path(args.review)}"
    print(line, file=sys.stderr if not args.output else sys.stdout)
    return 0


def _cmd_export(args) -> int:
    from .export import export_run

    out = export_run(args.run, args.output, onnx=args.onnx, abnormal=args.abnormal)
    print(
        f"{shown_path(args.run)} exported to {shown_path(out)} (model.safetensors, config.json, README.md"
        f"{', model.onnx' if args.onnx else ''})"
    )
    return 0


def _cmd_check_config(args) -> int:
    from .config import validate_config
    from .configfile import read_config_file
    from .runs import all_runs

    config: dict = {}
    for path in args.configfiles:  # merged in order, as Snakemake merges several --configfile files
        from snakemake.utils import update_config

        update_config(config, read_config_file(path))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate_config(config, source=", ".join(args.configfiles), require_roots=False)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(
        f"{', '.join(args.configfiles)}: valid; {len(config['experiments'])} experiments, "
        f"{len(all_runs(config))} training runs"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="cvm-cervix", description="CVM-Cervix workflow tools")
    parser.add_argument("--version", action="version", version=f"cvm-cervix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the registered model names, one per line")
    p.add_argument("-v", "--verbose", action="store_true", help="also the paper's name, source and minimum size")
    p.set_defaults(func=_cmd_models)

    from .data import adapter_kinds

    p = sub.add_parser("manifest", help="read a dataset folder and report counts, duplicates and problems")
    p.add_argument("root", help="the folder the dataset was unpacked into")
    p.add_argument("--kind", required=True, choices=[k for k in adapter_kinds() if k != "synthetic"])
    p.add_argument("-o", "--output", help="write the manifest CSV here")
    p.add_argument("--split", choices=["stratified", "grouped"], default="stratified")
    p.add_argument("--fractions", type=float, nargs=3, default=(0.6, 0.2, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", type=int, choices=[2, 7], default=2, help="herlev: 2 or 7 classes")
    p.add_argument("--layout", choices=["auto", "crops", "full"], default="auto", help="cric layout")
    p.add_argument("--crop-size", type=_whole(1), default=100, help="cric full images: crop side")
    p.add_argument("--workdir", help="where cric crops cut from full images are written")
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out (and list) entries that cannot be read, instead of stopping at the first",
    )
    p.add_argument("--threads", type=_whole(1), default=4)
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.set_defaults(func=_cmd_manifest)

    from .precisions import PRECISIONS

    p = sub.add_parser("predict", help="classify images with a trained run")
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument(
        "--run",
        required=True,
        action="append",
        help="a run folder (results/runs/<dataset>/<model>/<recipe>/seed<N>) or a folder cvm-cervix export wrote; "
        "given more than once, the runs' mean probability (a deep ensemble; run folders, evaluated, for "
        "--coverage and --operating-point) (default: none, required)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time flips: the mean probability over the four flip4x views, calibrated on the run's own "
        "flipped validation predictions (default: off)",
    )
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="the precision to run (default: fp32); int8 needs the run's compress step (it is calibrated on "
        "training images)",
    )
    p.add_argument("-o", "--output", help="CSV to write, complete only at the end (default: standard output)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run (default: auto)")
    p.add_argument("--batch-size", type=_whole(1), default=64, help="images decoded and run at once (default: 64)")
    p.add_argument("--threads", type=_whole(0), default=0, help="CPU threads (default 0: PyTorch's default)")
    p.add_argument("--workers", type=_whole(1), default=2, help="threads decoding images (default: 2)")
    p.add_argument(
        "--coverage",
        type=float,
        help="add each cell's conformal set and whether it is referred, at a coverage the run was calibrated for "
        "(analysis.referral.coverages; default: none)",
    )
    p.add_argument(
        "--operating-point",
        help="add the abnormal decision at one of the run's operating points, e.g. specificity0.95 (default: none)",
    )
    p.add_argument(
        "--review",
        help="also write a review page (self-contained HTML): referred cells first, then the least confident "
        "(default: none)",
    )
    p.add_argument(
        "--review-max", type=_whole(1), default=500, help="the most cells the review page shows (default: 500)"
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out an image that cannot be read and list it in the summary (default: stop, naming it)",
    )
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="write a trained run as a folder to share: weights, config.json, model card")
    p.add_argument("run", help="a run folder: results/runs/<dataset>/<model>/<recipe>/seed<N> (evaluated)")
    p.add_argument("-o", "--output", required=True, help="the folder to write (must not exist, or be empty)")
    p.add_argument("--onnx", action="store_true", help="also model.onnx (float32, ONNX Runtime)")
    p.add_argument(
        "--abnormal",
        nargs="+",
        metavar="CLASS",
        help="classes counted abnormal for the card's sensitivity (default: analysis.abnormal_classes' default)",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("check-config", help="check config files as the workflow would (YAML, schema, datasets)")
    p.add_argument("configfiles", nargs="+", help="one or more config files, merged in order like --configfile")
    p.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CvmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
