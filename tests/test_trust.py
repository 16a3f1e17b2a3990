"""A result always belongs to what made it: stale and foreign reports, changed inputs, full disks, locked runs."""

import json
import os
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_image

from cvm_cervix._io import atomic_path, exclusive_lock
from cvm_cervix.cli import main as cli
from cvm_cervix.config import validate_config
from cvm_cervix.data import build_cache, load_cache, prepare_dataset, read_manifest
from cvm_cervix.errors import CvmError

# --- one training per run folder ------------------------------------------------------------------------------


TRAIN_ARGS = dict(img_size=32, epochs=1, batch_size=8, threads=2, progress=False)


def test_a_run_folder_being_trained_waits_and_takes_the_other_trainings_result(tiny_dataset, tmp_path, caplog):
    """After a kill -9 of Snakemake its training job may live on. A second training of the same folder
    neither resumes from that live job's checkpoint nor fails (Snakemake would then remove the outputs,
    the first one's files): it waits, then uses the first one's result, which is this very run."""
    from cvm_cervix.train import train_run

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; sys.path.insert(0, sys.argv[1]); import cvm_cervix.train as t\n"
                "train = t._train\n"
                "def held(*a, **k):\n"
                "    print('held', flush=True); sys.stdin.readline(); return train(*a, **k)\n"
                "t._train = held\n"
                "t.train_run('shufflenet_v2_x0_5', sys.argv[3], sys.argv[2], img_size=32, epochs=1, batch_size=8,"
                " threads=1, progress=False)"
            ),
            str(REPO / "src"),
            str(out),
            str(tiny_dataset),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"

        def go_once_waiting():  # the holder trains only once this training waits for it
            while not any("waiting for it to end" in r.getMessage() for r in caplog.records):
                time.sleep(0.05)
            holder.stdin.write("go\n")
            holder.stdin.flush()

        threading.Thread(target=go_once_waiting, daemon=True).start()
        with caplog.at_level("WARNING"):
            info = train_run("shufflenet_v2_x0_5", tiny_dataset, out, **TRAIN_ARGS)
        assert holder.wait(timeout=120) == 0
    finally:
        holder.kill()
    waited = [r.getMessage() for r in caplog.records if "waiting for it to end" in r.getMessage()]
    assert waited and f"run folder {out} is being trained already by pid {holder.pid}" in waited[0]
    # the holder's own record, not a second training (a second one would have its own times)
    assert info == json.loads((out / "train.json").read_text()) and "used as it is" in caplog.text
    assert not (out / "checkpoint.pt").exists()


def test_a_training_that_outlived_its_workflow_is_not_trained_again(tiny_dataset, tmp_path, monkeypatch):
    """The README's kill -9 scenario: the orphaned training finishes and writes its files; Snakemake,
    which never saw it finish, removes them before it runs the job again. The run is not trained again:
    the orphan kept a second name for its files, taken back when the settings and data are the same."""
    import socket

    from cvm_cervix.owner import ORPHANED, WORKFLOW_ENV
    from cvm_cervix.train import train_run

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a Snakemake process that has ended
    monkeypatch.setenv(WORKFLOW_ENV, f"{socket.gethostname()} {gone.pid}")
    out = tmp_path / "run"
    first = train_run("shufflenet_v2_x0_5", tiny_dataset, out, **TRAIN_ARGS)
    assert (out / ORPHANED / "weights.safetensors").samefile(out / "weights.safetensors")
    monkeypatch.setenv(WORKFLOW_ENV, f"{socket.gethostname()} {os.getpid()}")  # the next, live workflow
    weights = (out / "weights.safetensors").read_bytes()
    for name in ("weights.safetensors", "history.csv", "train.json"):  # as Snakemake removes a job's outputs
        (out / name).unlink()
    again = train_run("shufflenet_v2_x0_5", tiny_dataset, out, **TRAIN_ARGS)
    assert again == first and (out / "weights.safetensors").read_bytes() == weights
    assert not (out / ORPHANED).exists()
    # kept files of other settings are never used: the run is trained, and they are gone
    train_run("shufflenet_v2_x0_5", tiny_dataset, out, **TRAIN_ARGS)  # live workflow: nothing kept
    assert not (out / ORPHANED).exists()
    monkeypatch.setenv(WORKFLOW_ENV, f"{socket.gethostname()} {gone.pid}")
    train_run("shufflenet_v2_x0_5", tiny_dataset, out, **TRAIN_ARGS)
    monkeypatch.setenv(WORKFLOW_ENV, f"{socket.gethostname()} {os.getpid()}")
    other = train_run("shufflenet_v2_x0_5", tiny_dataset, out, **{**TRAIN_ARGS, "lr": 1e-3})
    assert other["lr"] == 1e-3 and other["identity"]["settings"]["lr"] == 1e-3 and not (out / ORPHANED).exists()


def test_a_lock_file_that_is_a_link_is_refused_not_followed(tiny_dataset, tmp_path):
    from cvm_cervix.train import train_run

    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".train.lock").symlink_to(victim)
    with pytest.raises(CvmError, match=r"\.train\.lock is a symbolic link; a lock file is never followed"):
        train_run("shufflenet_v2_x0_5", tiny_dataset, out, **TRAIN_ARGS)
    assert victim.read_text() == "keep me" and not (out / "weights.safetensors").exists()


def test_a_checkpoint_of_another_epoch_count_resumes_only_where_the_schedule_ignores_it(tiny_dataset, tmp_path):
    """A cosine schedule is shaped by the epoch count: its checkpoint never resumes under another one."""
    from cvm_cervix.checkpoint import read_checkpoint
    from cvm_cervix.train import train_run

    def stopped_after_one(out, **kw):
        import cvm_cervix.checkpoint as ckpt

        calls = {"n": 0}
        original = ckpt.Checkpoint.save

        def save_then_stop(self, *a, **k):
            original(self, *a, **k)
            calls["n"] += 1
            raise KeyboardInterrupt

        ckpt.Checkpoint.save = save_then_stop
        try:
            with pytest.raises(KeyboardInterrupt):
                train_run("shufflenet_v2_x0_5", tiny_dataset, out, **{**TRAIN_ARGS, "epochs": 3, **kw})
        finally:
            ckpt.Checkpoint.save = original
        return read_checkpoint(out / "checkpoint.pt")

    for schedule, resumes in (("cosine", False), ("none", True)):
        out = tmp_path / schedule
        assert stopped_after_one(out, lr_schedule=schedule)["epoch"] == 1
        info = train_run(
            "shufflenet_v2_x0_5", tiny_dataset, out, **{**TRAIN_ARGS, "epochs": 2, "lr_schedule": schedule}
        )
        assert bool(info["resumed"]) is resumes, (schedule, info["resumed"])


def test_a_lock_is_released_when_its_block_ends(tmp_path):
    with exclusive_lock(tmp_path / "l", "busy"):
        with pytest.raises(CvmError, match="busy by pid"):
            with exclusive_lock(tmp_path / "l", "busy"):
                pass
    with exclusive_lock(tmp_path / "l", "busy"):  # free again
        pass


# --- the image cache ------------------------------------------------------------------------------------------


def _folder(root: Path, classes=("alpha", "beta"), n=6) -> Path:
    for c, cls in enumerate(classes):
        for i in range(n):
            write_image(root / cls / f"{i}.png", seed=100 * c + i)
    return root


def test_an_image_changed_after_prepare_is_not_cached_under_the_old_record(tmp_path):
    root = _folder(tmp_path / "images")
    prepare_dataset("mine", {"kind": "imagefolder"}, tmp_path / "data", root=root)
    manifest = read_manifest(tmp_path / "data" / "manifest.csv")
    changed = Path(manifest["path"][3])
    write_image(changed, seed=999)  # replaced after prepare, before cache
    with pytest.raises(CvmError) as err:
        build_cache(manifest["path"].tolist(), 16, tmp_path / "cache.npy", sha256=manifest["sha256"].tolist())
    assert f"{changed} changed after the manifest was made" in str(err.value) and "run the same command" in str(
        err.value
    )
    assert not (tmp_path / "cache.npy").exists()


def test_a_cache_cut_short_is_one_line_and_removed_so_the_next_run_rebuilds_it(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", seed=i)) for i in range(5)]
    cache = tmp_path / "cache_16.npy"
    build_cache(paths, 16, cache)
    assert load_cache(cache, 5, 16).shape == (5, 3, 16, 16)
    cache.write_bytes(cache.read_bytes()[:1000])  # a full disk or an interrupted copy
    with pytest.raises(CvmError) as err:
        load_cache(cache, 5, 16)
    assert f"image cache {cache} cannot be read" in str(err.value) and "run the same command again" in str(err.value)
    assert not cache.exists()  # so Snakemake makes it again
    build_cache(paths, 16, cache)
    with pytest.raises(CvmError, match="holds uint8 5x3x16x16, not the manifest's uint8 6x3x16x16"):
        load_cache(cache, 6, 16)
    build_cache(paths, 16, cache)
    with pytest.raises(CvmError, match="not the manifest's uint8 5x3x32x32"):
        load_cache(cache, 5, 32)


# --- a full disk ----------------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB file system (tmpfs, as root), so writes fail with ENOSPC as on a real full disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_naming_the_file_for_every_writer(full_disk, tmp_path):
    import torch

    from cvm_cervix.run import save_weights

    paths = [str(write_image(tmp_path / "img" / f"{i}.png", seed=i, size=(40, 40))) for i in range(40)]
    checks = {
        "cache": lambda: build_cache(paths, 64, full_disk / "cache_64.npy", threads=1),  # 480 KiB
        "weights": lambda: save_weights(torch.nn.Linear(300, 300), full_disk / "weights.safetensors", {}),
        "report": lambda: _write(full_disk / "report.html", "x" * 400_000),
    }
    for what, write in checks.items():
        with pytest.raises(CvmError) as err:
            write()
        message = str(err.value)
        assert message.startswith("no space left on the device to write "), (what, message)
        assert str(full_disk) in message and "nothing half-written was kept" in message and "\n" not in message
        assert not [p for p in full_disk.iterdir()], f"{what} left {list(full_disk.iterdir())}"


def _write(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def test_a_job_on_a_full_disk_ends_with_one_line_not_a_traceback(full_disk, tmp_path):
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from cvm_cervix.errors import run_reporting_errors\n"
        "def main():\n    with open(sys.argv[2], 'w') as f: f.write('x' * 400_000)\n"
        "run_reporting_errors(main)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(REPO / "src"), str(full_disk / "out.txt")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: no space left on the device")


# --- class names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names", [("LSIL", "lsil"), (unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"))]
)
def test_class_names_equal_but_for_case_or_normalisation_are_refused(tmp_path, names):
    root = _folder(tmp_path / "images", classes=(*names, "HSIL"))
    with pytest.raises(CvmError) as err:
        prepare_dataset("mine", {"kind": "imagefolder"}, tmp_path / "data", root=root)
    assert f"classes {names[0]!r} and {names[1]!r} differ only in letter case or Unicode normalisation" in str(
        err.value
    ) or f"classes {names[1]!r} and {names[0]!r} differ only" in str(err.value)
    assert not (tmp_path / "data" / "manifest.csv").exists()


def test_the_manifest_check_refuses_what_prepare_refuses(tmp_path, capsys):
    """`cvm-cervix manifest` is the check before any GPU hour: it must not pass what the workflow refuses."""
    root = _folder(tmp_path / "images", classes=("HSIL", "hsil", "NILM"))
    out = tmp_path / "m.csv"
    assert cli(["manifest", "--kind", "imagefolder", str(root), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "differ only in letter case or Unicode normalisation" in err and "'HSIL'" in err and "'hsil'" in err
    assert not out.exists()


def test_the_clinical_view_matches_abnormal_classes_as_the_report_names_them():
    from cvm_cervix.stats import clinical_view

    view = clinical_view(["lsil", "NILM", "lsil", "NILM"], ["lsil", "NILM", "NILM", "lsil"], ["LSIL", "HSIL"])
    assert view["abnormal_classes"] == ["lsil"]  # a folder named lsil is LSIL, counted abnormal as the report says
    assert (view["tp"], view["fn"], view["tn"], view["fp"]) == (1, 1, 1, 1)


# --- sizes a model cannot see whole ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, size, fix",
    [("deit_tiny", 30, "use 16 or 32"), ("cvm_cervix", 40, "use 32 or 48"), ("cvm_cervix", 100, "use 96 or 112")],
)
def test_a_vit_size_that_is_not_whole_patches_is_refused_before_training(model, size, fix):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["train"]["img_size"] = size
    config["experiments"] = {"e": {"dataset": "synthetic_combined", "models": [model]}}
    with pytest.raises(CvmError) as err:
        validate_config(config)
    assert f"model {model!r} (experiment 'e') needs a multiple of 16, not {size}; {fix}" in str(err.value)


# --- config files -------------------------------------------------------------------------------------------


def test_a_yaml_tag_is_named_with_its_file_and_line(tmp_path, capsys):
    bad = tmp_path / "mine.yaml"
    bad.write_text("results: r\ntrain:\n  lr: !!python/object/apply:os.system ['true']\n")
    assert cli(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"error: config file {bad}, line 3: the YAML tag !!python/object/apply:os.system is not allowed" in err
    assert cli(["check-config", str(REPO / "config" / "config.yaml")]) == 0
    assert "valid; 8 experiments, 28 training runs" in capsys.readouterr().out


def test_a_key_given_twice_is_named_with_its_file_and_lines(tmp_path, capsys):
    """PyYAML (and so Snakemake) keeps the last of a key given twice: the first one would vanish unread."""
    bad = tmp_path / "twice.yaml"
    bad.write_text(
        "train:\n  lr: 0.1\nanalysis:\n  referral:\n    coverages: [0.9]\n  referral: {}\ntrain:\n  epochs: 2\n"
    )
    assert cli(["check-config", str(bad)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: config file {bad}, line 7: key 'train' is given twice in one mapping (first on line 1); "
        "YAML keeps only the last, so the first would be ignored: merge them into one"
    )
    bad.write_text("train:\n  lr: 0.1\nanalysis:\n  referral:\n    coverages: [0.9]\n  referral: {}\n")
    assert cli(["check-config", str(bad)]) == 1
    assert "line 6: key 'referral' is given twice in one mapping (first on line 4)" in capsys.readouterr().err


def test_an_alias_bomb_is_one_short_line_at_once(tmp_path, capsys):
    """Nine levels of nested aliases (a billion laughs) expand to 9^9 values: refused by size before
    anything walks them, in a message that writes none of them out."""
    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\ntrain:\n  lr: *a9\n")
    assert cli(["check-config", str(bomb)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: config file {bomb} holds more than 100,000 values once its YAML aliases")
    assert len(err) < 400
    # a config Snakemake read itself (the dict it hands the workflow) is checked the same way

    shared = ["x"] * 10
    for _ in range(6):
        shared = [shared] * 10
    with pytest.raises(CvmError, match="the config holds more than 100,000 values"):
        validate_config({"train": {"lr": shared}}, source="the config")


def test_a_message_about_a_large_value_shows_an_excerpt():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["train"]["lr"] = ["x" * 10_000] * 1000
    with pytest.raises(CvmError) as err:
        validate_config(config)
    assert len(str(err.value)) < 300 and "'train.lr' in the config" in str(err.value)


# --- which report is current ---------------------------------------------------------------------------------


def test_a_report_knows_its_plan_and_the_files_it_was_made_from(tmp_path):
    from test_report import _fabricate

    from cvm_cervix.plan import Plan
    from cvm_cervix.report import build_report
    from cvm_cervix.report_state import fingerprinted, inputs_fingerprint, report_marks, stale_reason

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    results = tmp_path / "results"
    _fabricate(results, config)
    plan = Plan(config)
    stamp = results / "plan" / f"{plan.digest}.json"
    from cvm_cervix.plan import write_plan

    write_plan(config, stamp)
    inputs = plan.report_inputs(str(results))
    html = tmp_path / "report.html"
    context = build_report(config, html, results, inputs=inputs)
    files = fingerprinted(inputs)  # every input but the plan's stamp, whose name changes when a report is remade
    assert len(files) == sum(len(fs) for kind, fs in inputs.items() if kind != "plan") and str(stamp) not in files
    assert report_marks(html) == {
        "cvm-cervix-plan": plan.digest,
        "cvm-cervix-inputs": inputs_fingerprint(files, results),
    }
    assert context["plan"] == {"digest": plan.digest, "runs": 28, "experiments": 8, "stamp": f"plan/{plan.digest}.json"}
    text = html.read_text()
    assert f"for plan <code>{plan.digest}</code>\n(28 training runs of 8 experiments" in text
    assert stale_reason(html, plan.digest, inputs_fingerprint(files, results)) is None
    # another plan's report, a report made from other files, one with no marks: none is current
    other = dict(config, train={**config["train"], "epochs": 3})
    assert "not this config's plan" in stale_reason(html, Plan(other).digest, inputs_fingerprint(files, results))
    metrics = results / "runs" / "synthetic_combined" / "resnet18" / "none" / "seed0" / "metrics.json"
    os.utime(metrics, ns=(metrics.stat().st_atime_ns, metrics.stat().st_mtime_ns + 10**9))  # a newer result
    assert "have changed since" in stale_reason(html, plan.digest, inputs_fingerprint(files, results))
    html.write_text("<html><head><title>someone else's</title></head></html>")
    assert "carries no plan digest" in stale_reason(html, plan.digest, inputs_fingerprint(files, results))
    # the digest leaves out where results go and which GPU computes them
    assert Plan(dict(config, results="elsewhere", gpu={"jobs_per_device": 2})).digest == plan.digest


def test_a_failed_retraining_leaves_a_report_that_names_it(tmp_path):
    """Snakemake removes train.json before retraining; the old metrics.json stays. The report of everything
    that finished marks the run missing with the train job, instead of failing on the absent train.json."""
    from test_report import _fabricate

    from cvm_cervix.report import build_report

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    results = tmp_path / "results"
    _fabricate(results, config)
    (results / "data" / "synthetic_combined" / "cache_32.npy").write_bytes(b"")
    run = results / "runs" / "synthetic_combined" / "resnet18" / "none" / "seed0"
    for name in ("train.json", "weights.safetensors", "history.csv"):
        (run / name).unlink(missing_ok=True)
    log = results / "logs" / "train" / "synthetic_combined" / "resnet18_none_seed0.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("error: training diverged: the loss is not a finite number at epoch 1\n")
    context = build_report(config, tmp_path / "report.html", results)
    failures = context["incomplete"]["failures"]
    assert failures[0]["what"] == "runs/synthetic_combined/resnet18/none/seed0" and failures[0]["rule"] == "train"
    assert "training diverged" in failures[0]["error"]


def test_the_report_reads_only_the_files_its_rule_declares(tmp_path):
    """Every file of the results folder the report job opens is one of its rule's inputs (or inside a
    declared folder): a file it read without declaring it would be read before the job that makes it
    has run, or never noticed missing."""
    import sys

    from test_report import _fabricate

    from cvm_cervix.plan import Plan, write_plan
    from cvm_cervix.report import build_report

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    results = tmp_path / "results"
    _fabricate(results, config)
    plan = Plan(config)
    write_plan(config, results / "plan" / f"{plan.digest}.json")
    inputs = plan.report_inputs(str(results))
    declared = [Path(f).resolve() for files in inputs.values() for f in files]
    opened, watching = [], [True]

    def hook(event, args):
        if watching[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(Path(os.fsdecode(args[0])).resolve())

    sys.addaudithook(hook)  # audit hooks stay for the process: this one only listens while watching
    try:
        build_report(config, tmp_path / "out" / "report.html", results, inputs=inputs)
    finally:
        watching[0] = False
    read = {f for f in opened if results.resolve() in f.parents}
    assert read, "the report read nothing from the results folder"
    assert any(f.name.startswith("cache_") for f in read)  # the example images, from a declared cache
    undeclared = sorted(str(f) for f in read if not any(f == d or d in f.parents for d in declared))
    assert not undeclared, undeclared
