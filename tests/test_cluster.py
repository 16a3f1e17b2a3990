"""The workflow on a real one-node SLURM cluster (tests/cluster/slurm.sh up), through profiles/slurm.

Run by `make test-cluster`, which starts the cluster, runs these tests and tears it down. They are
skipped where no cluster answers, unless CVM_CLUSTER_TEST=1 (as `make test-cluster` sets), where
a missing cluster is a failure.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from safetensors.torch import load_file

pytestmark = pytest.mark.cluster
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
REQUIRED = os.environ.get("CVM_CLUSTER_TEST") == "1"
# The test node has 2 CPUs and little memory: the profile's sizes for real clusters are lowered here,
# the way a user overrides them on the command line. Two rules ask for their GPU the way some clusters
# want it (docs/running.md): train as a generic resource only (--gres, no --gpus), evaluate by GPU
# model with CPUs per GPU (the test node's fake GPU is of model "fake").
SMALL_NODE = [
    "--set-resources",
    *[
        f"{rule}:{key}={value}"
        for rule in ("train", "analyse", "compress_half", "compress_onnx", "cache", "prepare")
        for key, value in (("cpus_per_task", 2), ("mem_mb", 2000))
    ],
    "train:gres=gpu:1",
    "train:gpu=0",
    "evaluate:mem_mb=2000",
    "evaluate:gpu_model=fake",
    "evaluate:cpus_per_task=0",
    "evaluate:cpus_per_gpu=2",
]
FAST_POLL = [
    "--seconds-between-status-checks",
    "2",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--latency-wait",
    "5",
]


def cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return proc.returncode == 0 and ("idle" in proc.stdout or "mix" in proc.stdout)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not cluster_up():
        if REQUIRED:
            pytest.fail("no SLURM cluster answers: run tests/cluster/slurm.sh up first")
        pytest.skip("no SLURM cluster (make test-cluster starts one)")


def config(epochs: int = 1) -> dict:
    return {
        "datasets": {"syn": {"kind": "synthetic", "classes": "combined", "per_class": 5, "image_size": 32}},
        "train": {"img_size": 32, "epochs": epochs, "batch_size": 8, "lr": 0.001, "seeds": [0]},
        "experiments": {
            "main": {"dataset": "syn", "models": ["cvm_cervix"], "compress": ["fp16", "int8"]},
            "comparison": {"dataset": "syn", "models": ["shufflenet_v2_x0_5"]},
        },
    }


def run(workdir: Path, *args, timeout=900):
    cmd = [
        "timeout",
        "-k",
        "10",
        str(timeout),
        SNAKEMAKE,
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    (workdir / f"snakemake_{int(time.time() * 1000)}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc.stdout + proc.stderr


def slurm_jobs() -> list[dict]:
    """Every job the controller remembers (MinJobAge keeps finished ones), as key=value fields."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields.get("JobId"):
            jobs.append(fields)
    return jobs


def rule_of(job: dict) -> str:
    return job.get("Comment", "").removeprefix("rule_").split("_wildcards")[0]


def cancel_first_training_mid_run(run_dir: Path, stop: threading.Event, found: dict) -> None:
    """Preempt the cvm_cervix training job once its first epoch is checkpointed (SIGTERM, as SLURM does)."""
    while not stop.is_set():
        if (run_dir / "checkpoint.pt").is_file():
            for job in slurm_jobs():
                if (
                    rule_of(job) == "train"
                    and job.get("JobState") == "RUNNING"
                    and "cvm_cervix" in job.get("Comment", "")
                ):
                    subprocess.run(["scancel", "--signal=TERM", "--full", job["JobId"]], check=True)
                    found["job"] = job["JobId"]
                    return
        time.sleep(0.2)


def test_tiny_workflow_through_the_slurm_profile(tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for folder in (local, cluster):
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump(config(epochs=4)))
    before = {j["JobId"] for j in slurm_jobs()}

    stop, found = threading.Event(), {}
    watcher = threading.Thread(
        target=cancel_first_training_mid_run, args=(cluster / "results/runs/syn/cvm_cervix/none/seed0", stop, found)
    )
    watcher.start()
    try:
        out = run(
            cluster,
            "--workflow-profile",
            str(REPO / "profiles" / "slurm"),
            "--configfile",
            str(cluster / "config.yaml"),
            *SMALL_NODE,
            *FAST_POLL,
        )
    finally:
        stop.set()
        watcher.join()
    run(local, "--cores", "2", "--configfile", str(local / "config.yaml"))

    jobs = [j for j in slurm_jobs() if j["JobId"] not in before]
    by_rule: dict[str, list[dict]] = {}
    print("\nsubmitted SLURM jobs (id, state, what SLURM was asked for, rule and wildcards):")
    for job in jobs:
        by_rule.setdefault(rule_of(job), []).append(job)
        print(
            f"  {job['JobId']:>5} {job.get('JobState', ''):<10} {job.get('TRES', ''):<34} "
            f"{job.get('TresPerJob', '-') or '-':<16} {job.get('TresPerNode', '-') or '-':<12} "
            f"{job.get('CpusPerTres', '-') or '-':<10} {job.get('Comment', '')}"
        )
    # GPU rules asked SLURM for one GPU each, every other job for none; cheap rules never became jobs
    # train asked by --gres only (per node, not per job), evaluate by model with two CPUs per GPU
    assert by_rule["train"] and all(
        "gres/gpu:1" in j.get("TresPerNode", "").replace(":", "/", 1) and "gpu" not in j.get("TresPerJob", "")
        for j in by_rule["train"]
    ), [j.get("TresPerNode") for j in by_rule["train"]]
    assert by_rule["evaluate"] and all(
        "gpu:fake:1" in j.get("TresPerJob", "") and "gpu:2" in j.get("CpusPerTres", "") for j in by_rule["evaluate"]
    ), [(j.get("TresPerJob"), j.get("CpusPerTres")) for j in by_rule["evaluate"]]
    assert [("gres:gpu:1" in j.get("TresPerJob", "")) for j in by_rule["compress_half"]] == [True]  # fp16
    assert [("gpu" in j.get("TresPerJob", "")) for j in by_rule["compress_onnx"]] == [False]  # static int8
    for rule in ("synthesize", "prepare", "cache"):
        assert by_rule[rule] and all("gpu" not in j.get("TresPerJob", "") for j in by_rule[rule]), rule
    assert not {"all", "report", "stats"} & set(by_rule)
    assert "submitted" in out.lower() and ".snakemake/slurm_logs" in out  # each job's log is named

    # the preempted training job failed, was retried, and resumed from its checkpoint
    assert found.get("job"), "the training job was never caught mid-run"
    trains = [j for j in by_rule["train"] if "cvm_cervix" in j["Comment"]]
    assert len(trains) == 2 and {j["JobState"] for j in trains} >= {"COMPLETED"}
    info = json.loads((cluster / "results/runs/syn/cvm_cervix/none/seed0/train.json").read_text())
    assert info["resumed"] and info["resumed"][0]["after_epoch"] >= 1

    # the cluster's results are the local ones: same weights and metrics on the CPU
    for run_dir in ("syn/cvm_cervix/none/seed0", "syn/shufflenet_v2_x0_5/none/seed0"):
        a = load_file(local / "results/runs" / run_dir / "weights.safetensors")
        b = load_file(cluster / "results/runs" / run_dir / "weights.safetensors")
        assert all((a[k] == b[k]).all() for k in a), run_dir
        ma = json.loads((local / "results/runs" / run_dir / "metrics.json").read_text())["test"]
        mb = json.loads((cluster / "results/runs" / run_dir / "metrics.json").read_text())["test"]
        assert ma["confusion"] == mb["confusion"] and ma["accuracy"] == mb["accuracy"]
    assert (cluster / "results" / "report.html").is_file()
