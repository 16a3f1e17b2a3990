"""GPU device slots, tested without a GPU: fake device ids, real processes, real file locks."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cvm_cervix.devices import acquire_slot, claim_gpu, visible_gpus

HOLDER = textwrap.dedent("""
    import os, sys
    from cvm_cervix.devices import claim_gpu
    slot = claim_gpu("auto", int(sys.argv[2]), sys.argv[1], sys.argv[3].split(","))
    print(slot.device, slot.index, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
    sys.stdin.read()  # hold the slot until the test closes stdin or kills the process
""")


def hold(lock_dir, devices, per_device):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir), str(per_device), ",".join(devices)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")},
    )
    device, index, visible = proc.stdout.readline().split()
    return proc, (device, int(index)), visible


def test_concurrent_jobs_get_distinct_slots_k_per_device_and_a_killed_jobs_slot_is_free(tmp_path):
    holders = [hold(tmp_path, ["0", "1"], 2) for _ in range(4)]
    try:
        slots = [slot for _, slot, _ in holders]
        assert len(set(slots)) == 4
        assert sorted(d for d, _ in slots) == ["0", "0", "1", "1"]  # K = 2 per device
        assert slots[:2] == [("0", 0), ("1", 0)]  # spread over the devices before doubling up
        assert all(visible == slot[0] for _, slot, visible in holders)  # CUDA_VISIBLE_DEVICES = the slot's device
        with pytest.raises(TimeoutError, match="no free GPU slot among 4"):
            acquire_slot(["0", "1"], 2, tmp_path, wait=0.3, poll=0.1)
        victim, victim_slot, _ = holders[1]
        victim.send_signal(signal.SIGKILL)  # the OS releases its lock
        victim.wait()
        slot = acquire_slot(["0", "1"], 2, tmp_path, wait=5, poll=0.1)
        assert (slot.device, slot.index) == victim_slot
        slot.release()
    finally:
        for proc, _, _ in holders:
            proc.kill()
            proc.wait()


def test_one_job_per_device_by_default(tmp_path):
    first = acquire_slot(["0", "1", "2", "3"], 1, tmp_path)
    second = acquire_slot(["0", "1", "2", "3"], 1, tmp_path)
    assert (first.device, second.device) == ("0", "1") and first.index == second.index == 0
    first.release()
    assert acquire_slot(["0", "1", "2", "3"], 1, tmp_path).device == "0"


def test_no_gpu_or_cpu_device_takes_no_slot(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    slot = claim_gpu("auto", 1, tmp_path)
    assert slot.device is None and list(tmp_path.iterdir()) == []
    assert claim_gpu("cpu", 1, tmp_path, devices=["0"]).device is None and list(tmp_path.iterdir()) == []


def test_slurm_assignment_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    slot = claim_gpu("auto", 1, tmp_path, devices=["0", "1"])
    assert slot.device == "3" and slot.reason == "assigned by SLURM"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and list(tmp_path.iterdir()) == []


def test_visible_gpus_from_the_environment():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 5"}) == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
