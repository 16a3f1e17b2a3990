"""benchmarks/gpu.py must run when a GPU is finally at hand: its GPU code, on the CPU at a tiny size."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_gpu_benchmark_code_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cpu", "--images", "44",
                           "--size", "32", "--steps", "1", "--warmup", "1", "--seconds", "1", "--max-batch", "32", "--no-compile",
                           "--model-steps", "1", "--workers", "0", "--concurrent", "2", "--models", "resnet18",
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["largest_batch"] == 32
    configs = {(t["precision"], t["images_on"], t["batch"]) for t in result["train"]}
    assert configs == {(p, s, b) for p in ("fp32", "bf16") for s in ("GPU", "host, pinned") for b in (16, 32)}
    assert all(t["images_per_s"] > 0 for t in result["train"]) and result["plain"] > 0
    assert {i["precision"] for i in result["infer"]} == {"fp32", "bf16"}
    assert set(result["concurrent"]) == {"2"} and result["concurrent"]["2"] > 0
    assert set(result["model_rates"]) == {"cvm_cervix", "resnet18"} and set(result["floor_rates"]) == {"cvm_cervix",
                                                                                                      "resnet18"}
    assert result["paper_runs"] == 37 and result["paper_gpu_hours"] > 0 and result["paper_floor_hours"] > 0
    assert {t["step"] for t in result["train"]} == {"eager"}  # the captured step needs CUDA: said, not faked
    assert "captured step (cuda_graph): needs CUDA" in result["skipped"]
    assert "| training | images on | batch | step | images/s | × plain | of the floor" in proc.stdout
    assert "× the floor (goal: 1.3×)" in proc.stdout
