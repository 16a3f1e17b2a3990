"""The run record (train.json): one type written whole, one versioned reader, identity and params from it."""

import dataclasses
import json
import re

import pytest
from test_report import train_record

from cvm_cervix.errors import CvmError
from cvm_cervix.record import FORMAT, RunRecord
from cvm_cervix.settings import ADDED_LATER, RESULT, TrainSettings

# A value other than the default for each setting that decides the result.
OTHER = {
    "img_size": 64,
    "epochs": 7,
    "batch_size": 3,
    "lr": 0.5,
    "weight_decay": 0.5,
    "calibration_holdout": 0.25,
    "lr_schedule": "cosine",
    "amp": False,
    "amp_dtype": "float16",
    "pretrained": True,
    "step": "cuda_graph",
    "head_activation": "relu",
    "head_hidden": 17,
    "head_dropout": 0.25,
    "weights": "/some/file.safetensors",
    "train_fraction": 0.5,
    "init_from": "runs/syn/cvm_cervix/none/seed0",
    "stain_normalization": "reinhard",
}


def test_every_setting_that_decides_the_result_has_another_value_here():
    assert set(OTHER) == set(TrainSettings.names(RESULT))
    assert all(OTHER[k] != getattr(TrainSettings(), k) for k in OTHER)


def test_the_record_is_written_whole_and_read_back_as_the_same_record(tmp_path):
    data = train_record(model="cvm_cervix", classes=("x", "y", "z"), epochs=4, params=12)
    assert data["format"] == FORMAT and data["settings"]["epochs"] == 4 and data["num_classes"] == 3
    (tmp_path / "train.json").write_text(json.dumps(data))
    record = RunRecord.read(tmp_path)
    assert record.to_json() == data and record.settings == TrainSettings(epochs=4)
    assert data["identity"] == record.identity()
    assert RunRecord.from_json(data, "x") == record


def test_a_record_written_before_the_format_key_is_read_in_the_current_layout(tmp_path):
    """A train.json of an earlier version: flat, without format, settings, identity or the keys added
    later (normalisation, fusion head, amp_dtype, lr_schedule): read as a record, its settings as they took effect."""
    old = {
        "model": "resnet18",
        "dataset": "syn",
        "augment": "flip4x",
        "seed": 2,
        "classes": ["a", "b"],
        "num_classes": 2,
        "img_size": 48,
        "epochs": 5,
        "batch_size": 8,
        "lr": 0.001,
        "weight_decay": 0.01,
        "pretrained": False,
        "amp": True,
        "device": "cuda:0",
        "best_epoch": 4,
        "best_val_acc": 0.75,
        "params": 11_000_000,
        "total_seconds": 50.0,
    }
    record = RunRecord.from_json(old, "old/train.json")
    assert (record.settings.img_size, record.settings.epochs, record.settings.lr_schedule) == (48, 5, "none")
    assert record.amp and record.amp_dtype is None and record.normalization is None and record.fusion_head is None
    current = record.to_json()
    assert current["format"] == FORMAT and current["seconds_per_epoch"] == 10.0 and current["augment"] == "flip4x"
    assert current["identity"]["settings"]["amp"] is None  # no 16-bit type recorded: it resumes nothing


@pytest.mark.parametrize(
    "change, words",
    [
        ({"format": 9}, "format 9, which this version does not know"),
        ({"settings": {"epochs": 3, "warmup": 2}}, "settings ['warmup'] are not settings of this version"),
        ({"settings": None}, "lacks its 'settings'"),
        ({"num_classes": 3}, "2 classes listed but num_classes is 3"),
        ({"classes": ["a", "a"]}, "class 'a' is listed twice"),
        ({"seed": "0"}, "lacks key 'seed'"),
        ({"normalization": {"": {"mean": [0, 0, 0], "std": [1, 0, 1]}}}, "each above 0"),
    ],
)
def test_a_record_that_is_not_one_is_one_line_naming_the_file(change, words):
    with pytest.raises(CvmError, match=re.escape(words)) as err:
        RunRecord.from_json({**train_record(), **change}, "runs/x/train.json")
    assert str(err.value).startswith("runs/x/train.json")


def test_every_setting_that_decides_the_result_retrains_the_run_or_refuses_its_checkpoint():
    """By construction: a changed result setting changes the rule's params (it retrains) and the identity a
    checkpoint must match. Two exceptions, each for a reason: ``weights`` is a params entry of its own, and
    with a constant learning rate a checkpoint resumes into a run of more epochs."""
    base = RunRecord.from_json(train_record(model="cvm_cervix"), "x")
    for name, value in OTHER.items():
        changed = dataclasses.replace(base, settings=base.settings.replace(**{name: value}))
        if name == "amp_dtype":  # decides only where mixed precision runs: with amp, and as the type it ran in
            on = dataclasses.replace(base, settings=base.settings.replace(amp=True), amp=True, amp_dtype="bfloat16")
            assert on.settings.replace(amp_dtype="float16").params(True) != on.settings.params(True)
            assert dataclasses.replace(on, amp_dtype="float16").identity() != on.identity()
            continue
        if name == "amp":  # as it took effect: the base asked for it on a CPU and trained in float32 too
            assert changed.identity() == base.identity()
            assert dataclasses.replace(changed, amp=True, amp_dtype="float16").identity() != base.identity()
        elif name in ("step", "init_from"):  # as it ran: the captured step, the run started from by its digest
            assert changed.identity() == base.identity()
        elif name == "epochs":
            assert changed.identity() == base.identity()  # constant lr: a checkpoint resumes into more epochs
            scheduled = dataclasses.replace(base, settings=base.settings.replace(lr_schedule="cosine"))
            assert dataclasses.replace(scheduled, settings=scheduled.settings.replace(epochs=7)).identity() != (
                scheduled.identity()
            )
        else:
            assert changed.identity() != base.identity(), name
        if name == "weights":
            assert changed.settings.params(True) == base.settings.params(True)
        else:
            assert changed.settings.params(True) != base.settings.params(True), name


def test_params_leave_out_keys_added_later_at_their_default_and_the_head_of_a_linear_model():
    params = TrainSettings().params(mlp_head=True)
    assert list(params) == sorted(params) and not set(params) & set(ADDED_LATER) and "weights" not in params
    assert "head_activation" in TrainSettings(head_activation="relu").params(True)
    assert "head_activation" not in TrainSettings(head_activation="relu").params(False)
    assert "amp_dtype" not in TrainSettings(amp=False, amp_dtype="float16").params(True)  # without amp: nothing
    assert TrainSettings(amp=True, amp_dtype="float16").params(True)["amp_dtype"] == "float16"
