"""Wheels of what the workflow needs beyond a GPU machine's PyTorch stack, for a machine without a package index.

    .venv/bin/python benchmarks/gpu_wheels.py [--dest .whl] [--python-version 3.12]

A GPU machine often has a Python with PyTorch, torchvision, timm, numpy, pandas, scikit-learn and the like
(``PRESENT``) and no way to install the rest. This takes the workflow's other needs (snakemake, plotly,
openTSNE, jsonschema, torchstain) with everything they depend on, at the versions installed in this environment
(so the set is one that works together), leaves out what the present packages bring with them, and
puts one wheel of each into ``--dest`` for that machine's Python (CPython ``--python-version`` on
x86-64 Linux): a binary wheel fetched for it, a pure-Python one fetched or, where the project publishes
only a source archive, built here. ``benchmarks/gpu_checks.sh`` installs them from ``.whl/`` with
``pip install --no-index --target``. Needs this environment to have the workflow installed
(``make env``) and a package index.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOTS = ["snakemake", "plotly", "openTSNE", "jsonschema", "torchstain"]  # torchstain: train.stain_normalization
# What benchmarks/gpu_checks.sh takes from the GPU machine's own Python (and so, everything they need).
PRESENT = [
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "pandas",
    "safetensors",
    "tqdm",
    "scikit-learn",
    "scipy",
    "onnx",
    "onnxruntime",
    "jinja2",
    "pyyaml",
    "pillow",
]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]


def target_environment(python: str) -> dict:
    """The markers of CPython ``python`` (major.minor) on x86-64 Linux: which requirements apply there."""
    return {
        **default_environment(),
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
    }


def closure(roots: list[str], environment: dict, stop: set[str] = frozenset()) -> dict[str, str]:
    """Every distribution ``roots`` need in ``environment`` (markers evaluated there), as installed here:
    canonical name -> version. Names in ``stop`` are neither listed nor followed."""
    found: dict[str, str] = {}
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found or name in stop:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{name} is needed but not installed in {sys.prefix}; run `make env` first") from None
        found[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({**environment, "extra": ""}):
                todo.append(canonicalize_name(req.name))
    return found


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def fetch(name: str, version: str, dest: Path, python: str) -> Path:
    """One wheel of ``name==version`` for CPython ``python`` on x86-64 Linux, into ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        got = pip(
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            python,
            "--implementation",
            "cp",
            *platforms,
            "--dest",
            tmp,
            f"{name}=={version}",
        )
        if got.returncode != 0:  # no wheel published: build one, which must then be pure Python
            got = pip("wheel", "--no-deps", "--wheel-dir", tmp, f"{name}=={version}")
        wheels = list(Path(tmp).glob("*.whl"))
        if got.returncode != 0 or len(wheels) != 1:
            raise SystemExit(f"no wheel of {name}=={version} for CPython {python}:\n{got.stderr[-1500:]}")
        _, _, _, tags = parse_wheel_filename(wheels[0].name)
        if not any(t.abi in ("none", "abi3", f"cp{python.replace('.', '')}") for t in tags):
            raise SystemExit(
                f"{wheels[0].name} was built for this machine's Python, not CPython {python}: "
                f"{name} has no wheel for it"
            )
        return Path(shutil.move(str(wheels[0]), dest / wheels[0].name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", default=".whl", help="folder of the wheels (emptied first)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python, major.minor")
    args = parser.parse_args()
    environment = target_environment(args.python_version)
    present = set(closure(PRESENT, environment))
    wanted = closure(ROOTS, environment, stop=present)
    dest = Path(args.dest)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    total = 0
    for name, version in sorted(wanted.items()):
        wheel = fetch(name, version, dest, args.python_version)
        total += wheel.stat().st_size
        print(f"{wheel.name}  {wheel.stat().st_size / 2**20:.1f} MiB")
    print(
        f"{len(wanted)} wheels, {total / 2**20:.1f} MiB in {dest}/ for CPython {args.python_version} on x86-64 Linux; "
        f"left to that machine: {', '.join(PRESENT)} and what they need"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
