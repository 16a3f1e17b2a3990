"""The GPU checks must run when a GPU is finally at hand: benchmarks/gpu_checks.sh and benchmarks/gpu.py's
GPU code, on the CPU at a tiny size (CHECKS_DEVICE=cpu, gpu.py --device cpu)."""

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SECTIONS = ["step", "inference", "sharing", "warm-up", "per-model", "extras"]


def gpu_checks(out: Path, *sections: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHECKS_DEVICE": "cpu", "PYTHON": sys.executable, "CHECKS_WORKDIR": str(out / "work"), **env}
    return subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_checks.sh"), str(out), *sections],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_gpu_checks_run_every_section_on_the_cpu(tmp_path):
    proc = gpu_checks(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.rstrip().endswith("tests: passed\nbench: passed\nworkflow: passed")
    assert re.search(r"^\d+ skipped in ", (tmp_path / "cuda_tests.log").read_text(), re.M)  # no CUDA here

    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["largest_batch"] == 32 and result["failed"] == []
    assert list(result["section_seconds"]) == SECTIONS
    rows = {(t["precision"], t["images_on"], t["batch"], t["step"], t["optimizer"]) for t in result["train"]}
    assert rows == (
        {(p, "GPU", b, "eager", "AdamW") for p in ("fp32", "bf16") for b in (16, 32)}
        | {(p, "host, pinned", b, "eager", "AdamW") for p in ("fp32", "bf16") for b in (16, 32)}
        | {("bf16", "GPU", 16, "eager", "AdamW fused")}
    )
    assert all(t["images_per_s"] > 0 for t in result["train"]) and result["plain"] > 0
    # the captured step and cuDNN need CUDA: said, not faked
    assert "train bf16 GPU batch 16 cuda_graph: the captured step needs CUDA" in result["skipped"]
    assert "warm-up K=2 at 32 px, cuDNN autotuning off: cuDNN needs CUDA" in result["skipped"]
    assert {i["precision"] for i in result["infer"]} == {"fp32", "bf16"}

    shared = result["concurrent"]["2"]
    assert shared["runs"] == 2 and len(shared["per_run_images_per_s"]) == 2
    assert shared["images_per_s"] == pytest.approx(sum(shared["per_run_images_per_s"]))
    assert 0 < shared["cpu_cores"] <= 2 * 1.2  # one thread each on the CPU
    assert shared["peak_mib_per_run"] > 100  # the host memory of a process holding torch and the model
    assert 0 < shared["import_s"] < shared["first_step_s"] <= shared["ready_s"]
    assert result["sharing_step"]["step"] == "eager"
    (warm,) = result["warmup"]
    assert warm["size"] == 32 and warm["cudnn_benchmark"] is True and warm["runs"] == 2
    assert 0 < warm["mean_first_step_s"] <= warm["first_step_s"]

    assert set(result["model_rates"]) == set(result["floor_rates"]) == {"cvm_cervix", "resnet18"}
    # on the CPU only the fused optimiser has both rows a recommendation needs (no capture, no K = 1, no cuDNN)
    assert set(result["recommended"]) == {"fused AdamW"}
    assert result["paper_runs"] == 47 and result["paper_gpu_hours"] > 0 and result["paper_floor_hours"] > 0
    log = (tmp_path / "gpu.log").read_text()
    assert "| training | images on | batch | step | optimizer | images/s | × plain | of the floor" in log
    assert "| runs sharing the GPU (bf16, batch 16, eager step) | images/s in all |" in log
    assert "× the floor (goal: 1.3×)" in log and "of the floor (" in log

    # the workflow section planned the embedded default on CUDA, four jobs to a GPU
    assert (tmp_path / "cuda.yaml").read_text() == "train: {device: cuda}\ngpu: {jobs_per_device: 4}\n"
    workflow = (tmp_path / "workflow.log").read_text()
    assert "This was a dry-run" in workflow and "train" in workflow

    # the benchmark again, going on from this run: everything it measured is kept, nothing is measured again
    again = gpu_checks(tmp_path / "again", "bench", RESUME_FROM=str(tmp_path / "gpu.json"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed = json.loads((tmp_path / "again" / "gpu.json").read_text())
    assert resumed["resumed"] == 1 and resumed["train"] == result["train"] and resumed["plain"] == result["plain"]
    assert resumed["concurrent"] == result["concurrent"] and resumed["model_rates"] == result["model_rates"]
    assert resumed["paper_gpu_hours"] == pytest.approx(result["paper_gpu_hours"])


def test_gpu_checks_run_only_the_sections_named(tmp_path):
    proc = gpu_checks(tmp_path, "workflow")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.rstrip().splitlines()[-2:]
    assert last[0].startswith("== after ") and last[1] == "workflow: passed"
    assert not (tmp_path / "gpu.json").exists() and not (tmp_path / "cuda_tests.log").exists()
    assert "This was a dry-run" in (tmp_path / "workflow.log").read_text()

    bad = gpu_checks(tmp_path / "bad", "bench", "benchmark")
    assert bad.returncode == 2 and "unknown section 'benchmark': use tests, bench or workflow" in bad.stderr


def test_gpu_benchmark_out_of_time_skips_and_says_so_and_a_resumed_run_keeps_what_was_measured(tmp_path):
    """A budget spent before the first measurement: every row is listed as skipped, the run still ends well.
    ``--resume`` goes on from its JSON: what it holds is kept and not measured again; another card's is refused."""
    out = tmp_path / "gpu.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "gpu.py"),
        "--device",
        "cpu",
        "--images",
        "22",
        "--size",
        "32",
        "--max-batch",
        "16",
        "--budget",
        "0",
        "--models",
        "resnet18",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["train"] == [] and result["concurrent"] == {} and result["failed"] == []
    assert "train fp32 GPU batch 16 eager: out of time" in result["skipped"]
    assert "concurrent K=8: out of time" in result["skipped"]
    assert "warm-up K=4 at 32 px, cuDNN autotuning on: out of time" in result["skipped"]
    assert "per-model rate resnet18: out of time" in result["skipped"]
    assert "plain loop: out of time" in result["skipped"]
    assert any(s.startswith("the plan's projection") for s in result["skipped"]) and "paper_gpu_hours" not in result

    # an earlier run that measured one row and K = 8 (as a cut GPU run would have): go on from it
    row = {
        "precision": "fp32",
        "images_on": "GPU",
        "batch": 16,
        "step": "eager",
        "optimizer": "AdamW",
        "images_per_s": 123.0,
    }
    shared = {
        "runs": 8,
        "step": "eager",
        "fused": False,
        "cudnn_benchmark": True,
        "size": 32,
        "images_per_s": 800.0,
        "per_run_images_per_s": [100.0] * 8,
        "cpu_cores": 8.0,
        "peak_mib_per_run": 900.0,
        "device_in_use_mib": 9000.0,
        "import_s": 3.0,
        "first_step_s": 9.0,
        "mean_first_step_s": 8.0,
        "ready_s": 10.0,
    }
    out.write_text(json.dumps({**result, "train": [row], "concurrent": {"8": shared}}))
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    again = json.loads(out.read_text())
    assert again["resumed"] == 1 and again["train"] == [row] and again["concurrent"] == {"8": shared}
    assert again["infer"] == result["infer"]  # measured by the first run, not again
    assert "train fp32 GPU batch 16 eager: out of time" not in again["skipped"]  # it was measured
    assert "train bf16 GPU batch 16 eager: out of time" in again["skipped"]
    assert "concurrent K=8: out of time" not in again["skipped"] and "concurrent K=4: out of time" in again["skipped"]
    assert "| 8 | 800 | 1.00 | 100–100 | 900 | 9,000 | 8.0 | 9.0 |" in proc.stdout

    out.write_text(json.dumps({**again, "device": "NVIDIA H200"}))
    refused = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and f"--resume: {out} holds a run on {{'device': 'NVIDIA H200'" in refused.stderr


def test_gpu_wheels_take_what_the_pytorch_stack_lacks_at_the_versions_installed_here():
    spec = importlib.util.spec_from_file_location("gpu_wheels", REPO / "benchmarks" / "gpu_wheels.py")
    wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheels)
    env = wheels.target_environment("3.12")
    present = set(wheels.closure(wheels.PRESENT, env))
    assert {"torch", "numpy", "jinja2", "markupsafe", "scipy"} <= present  # the stack and what it brings
    wanted = wheels.closure(wheels.ROOTS, env, stop=present)
    assert {"snakemake", "plotly", "opentsne", "jsonschema", "rpds-py", "snakemake-interface-common"} <= set(wanted)
    assert "torchstain" in wanted  # the default's stain normalisation runs there too
    assert not present & set(wanted)
    assert wanted["snakemake"] == importlib.metadata.version("snakemake")
    # markers are the target's, not this interpreter's: for Python 3.10 huggingface_hub needs tomli too
    assert "tomli" not in wanted
    with pytest.raises(SystemExit, match="tomli is needed but not installed"):
        wheels.closure(wheels.PRESENT, wheels.target_environment("3.10"))


def test_concurrent_runs_that_fail_end_with_their_error_not_a_wait(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "benchmarks" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    barriers = set(Path(bench.tempfile.gettempdir()).glob("cvm_barrier_*"))
    with pytest.raises(
        RuntimeError,
        match=r"2 of 2 runs failed or ran out of time; the first: exit 1: "
        r"FileNotFoundError: .*missing\.npy'$",
    ):
        bench.concurrent_runs(2, tmp_path / "missing.npy", 16, 1, 32, "cpu")
    assert set(Path(bench.tempfile.gettempdir()).glob("cvm_barrier_*")) == barriers  # nothing left behind


def test_the_numbers_recommend_defaults_only_past_a_margin():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "benchmarks" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def row(step, rate, optimizer="AdamW", batch=16):
        return {
            "precision": "bf16",
            "images_on": "GPU",
            "batch": batch,
            "step": step,
            "optimizer": optimizer,
            "images_per_s": rate,
        }

    def shared(k, rate):
        return {"images_per_s": rate, "peak_mib_per_run": 2000.0, "cpu_cores": 1.5 * k}

    result = {
        "train": [
            row("eager", 400.0),
            row("cuda_graph", 800.0),
            row("cuda_graph", 840.0, "AdamW fused"),
            row("eager", 2400.0, batch=256),
        ],
        "concurrent": {"1": shared(1, 400.0), "2": shared(2, 750.0), "4": shared(4, 1000.0), "8": shared(8, 1050.0)},
        "warmup": [
            {"cudnn_benchmark": True, "mean_first_step_s": 20.0, "runs": 4},
            {"cudnn_benchmark": False, "mean_first_step_s": 5.0, "runs": 4},
        ],
    }
    rec = bench.recommend(result)
    assert rec["train.step"]["value"] == "cuda_graph" and "(2.00x" in rec["train.step"]["why"]
    assert rec["fused AdamW"]["value"] is False  # 1.05x: inside the margin
    assert rec["gpu.jobs_per_device"]["value"] == 4  # within 10% of K = 8's sum, with half the runs
    assert "1.5 CPU cores per run" in rec["gpu.jobs_per_device"]["why"]
    assert rec["cuDNN autotuning on small images"]["value"] is False
    # a step captured only 5% faster changes nothing; rows that did not run recommend nothing
    result["train"][1]["images_per_s"] = 420.0
    rec = bench.recommend({**result, "concurrent": {}, "warmup": []})
    assert rec["train.step"]["value"] == "eager" and set(rec) == {"train.step"}  # no eager fused row
    assert bench.recommend({"train": [], "concurrent": {}, "warmup": []}) == {}
