"""The plan as code: which jobs a config asks for and the one table of paths the rules and the library share."""

import copy
import re
import string

import pytest
import yaml
from conftest import REPO

from cvm_cervix.config import validate_config
from cvm_cervix.jobs import OUTPUTS, PRODUCER, inputs, needs
from cvm_cervix.paths import BENCHMARKS, LOGS, PATHS, path, pattern, run_values
from cvm_cervix.plan import Plan
from cvm_cervix.precisions import COMPRESSED, PRECISIONS, rule_artifact, rule_precisions
from cvm_cervix.runs import Run

WILDCARDS = {"dataset", "model", "recipe", "seed", "size", "precision", "target", "experiment", "digest", "method"}


def config(variants=None, pretrained=False, **experiments) -> dict:
    return validate_config(
        {
            "variants": variants or {},
            "datasets": {"syn": {"kind": "synthetic"}, "other": {"kind": "synthetic", "classes": "herlev"}},
            "train": {"seeds": [0, 1], "epochs": 1, "img_size": 32, "pretrained": pretrained},
            "experiments": experiments
            or {
                "main": {"dataset": "syn", "models": ["cvm_cervix"], "augment": ["none", "flip4x"], "analysis": True},
                "comparison": {
                    "dataset": "syn",
                    "models": ["resnet18", "cvm_cervix"],
                    "seeds": [3],
                    "compress": ["int8", "fp16"],
                },
            },
        }
    )


def test_every_template_names_only_the_workflows_wildcards():
    for table in (PATHS, LOGS, BENCHMARKS):
        for key, template in table.items():
            names = {field for _, field, _, _ in string.Formatter().parse(template) if field}
            assert names <= WILDCARDS, (key, names - WILDCARDS)


def test_a_pattern_fills_what_is_fixed_and_leaves_the_rest_as_wildcards():
    assert pattern("cache", "res", size=96) == "res/data/{dataset}/cache_96.npy"
    assert pattern("manifest", "res", dataset="{target}") == "res/data/{target}/manifest.csv"
    assert pattern("train", "res", table="log") == "res/logs/train/{dataset}/{model}_{recipe}_seed{seed}.log"
    run = Run("syn", "resnet18", "none+amp", 2)
    assert path("metrics", "res", run) == "res/runs/syn/resnet18/none+amp/seed2/metrics.json"
    assert path("run", "", run) == run.path
    filled = pattern("compressed_metrics", "res").format(
        dataset="syn", model="resnet18", recipe="none+amp", seed=2, precision="int8"
    )
    assert filled == path("compressed_metrics", "res", run, precision="int8")


def test_a_template_left_unfilled_is_named():
    with pytest.raises(KeyError, match="'cache' needs 'size'"):
        path("cache", "res", dataset="syn")
    with pytest.raises(KeyError, match="no path template 'nothing'"):
        pattern("nothing")


def test_runs_compress_and_analysis_jobs_of_each_experiment():
    plan = Plan(config())
    assert len(plan.runs) == 2 * 2 + 2  # main: 2 augments x 2 seeds; comparison: resnet18, cvm_cervix at seed 3
    jobs = {(j.run, j.precision) for j in plan.compress_jobs()}
    assert jobs == {(Run("syn", m, "none", 3), p) for m in ("resnet18", "cvm_cervix") for p in ("int8", "fp16")}
    # analysis: the experiment's first seed only, each of its recipes
    assert plan.analysis_runs() == [Run("syn", "cvm_cervix", "flip4x", 0), Run("syn", "cvm_cervix", "none", 0)]


def test_statistics_compare_each_run_with_the_reference_at_the_same_recipe_and_seed():
    plan = Plan(
        config(
            comparison={"dataset": "syn", "models": ["resnet18"], "seeds": [0]},
            main={"dataset": "syn", "models": ["cvm_cervix"]},
        )
    )
    # the reference's runs (cvm_cervix, seeds 0 and 1) are planned: the one at seed 0 joins the comparison
    assert plan.stats_runs("comparison") == [Run("syn", "cvm_cervix", "none", 0), Run("syn", "resnet18", "none", 0)]
    entries = plan.stats_entries("comparison", "res")
    assert [e["predictions"] for e in entries] == [
        "res/runs/syn/cvm_cervix/none/seed0/predictions_test.csv",
        "res/runs/syn/resnet18/none/seed0/predictions_test.csv",
    ]
    assert {e["start"] for e in entries} == {"random weights"}


def test_variants_start_from_the_run_they_name_and_wait_for_it():
    cfg = config(
        variants={"from_main": {"init_from": "main/cvm_cervix/none"}},
        pretrained=True,
        main={"dataset": "syn", "models": ["cvm_cervix"]},
        tuned={"dataset": "other", "models": ["cvm_cervix"], "variants": ["from_main"]},
    )
    plan = Plan(cfg)
    tuned = Run("other", "cvm_cervix", "none+from_main", 1)
    tuned_inputs = inputs(plan, "train", "res", **run_values(tuned))
    assert tuned_inputs == {
        "manifest": "res/data/other/manifest.csv",
        "classes": "res/data/other/classes.json",
        "cache": "res/data/other/cache_32.npy",
        "init_weights": "res/runs/syn/cvm_cervix/none/seed1/weights.safetensors",
        "init_info": "res/runs/syn/cvm_cervix/none/seed1/train.json",
    }  # no weights step: it starts from the other run, not from ImageNet
    main_inputs = inputs(plan, "train", "res", **run_values(Run("syn", "cvm_cervix", "none", 0)))
    assert main_inputs["pretrained"] == "res/weights/cvm_cervix.json" and "init_weights" not in main_inputs
    assert plan.train_params(tuned)["init_from"] == "runs/syn/cvm_cervix/none/seed1"
    assert "device" not in plan.train_params(tuned) and "seeds" not in plan.train_params(tuned)


def test_report_inputs_name_every_result_the_report_reads():
    plan = Plan(config())
    inputs = plan.report_inputs("res")
    assert len(inputs["metrics"]) == len(inputs["train"]) == len(inputs["history"]) == len(plan.runs)
    assert inputs["stats"] == ["res/stats/main.json", "res/stats/comparison.json"]
    assert sorted(inputs["compressed"]) == sorted(
        f"res/runs/syn/{m}/none/seed3/compressed/{p}/metrics.json"
        for m in ("resnet18", "cvm_cervix")
        for p in ("int8", "fp16")
    )
    assert len(inputs["analysis"]) == 6 and all(
        f.endswith(("gallery.json", "gallery", "tsne.csv")) for f in inputs["analysis"]
    )
    assert inputs["manifests"] == ["res/data/syn/manifest.csv"] and "transfer" not in inputs
    assert inputs["classes"] == ["res/data/syn/classes.json"]
    assert inputs["weights"] == [f"res/runs/syn/{m}/none/seed3/weights.safetensors" for m in ("cvm_cervix", "resnet18")]
    # each compress job's benchmark file is the one its rule writes
    bench = [f for f in inputs["benchmarks"] if "/compress" in f]
    assert "res/benchmarks/compress_onnx/syn/resnet18_none_seed3_int8.tsv" in bench
    assert "res/benchmarks/compress_half/syn/resnet18_none_seed3_fp16.tsv" in bench
    assert len(bench) == 4


def test_the_papers_config_plans_its_47_runs():
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate_config(cfg, require_roots=False)
    plan = Plan(cfg)
    assert len(plan.runs) == 47
    inputs = plan.report_inputs("results")
    assert inputs["transfer"] == ["results/transfer/matrix.json"]
    cells = plan.transfer_entries("results")
    assert len(cells) == len(plan.transfer_cells()) and all(
        c["predictions"].endswith(f"/transfer/{c['target']}.csv") for c in cells
    )


def test_a_baseline_experiments_runs_are_the_other_arm_of_its_statistics():
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    cfg["train"]["seeds"] = [0, 1]
    validate_config(cfg, require_roots=False)
    plan = Plan(cfg)
    entries = plan.stats_entries("leakage", "res")
    arms = sorted((e["dataset"], e["seed"], e.get("arm")) for e in entries)
    # leakage's own CVM-Cervix runs, and main's (the baseline) of the same model and recipe, every seed
    assert arms == [
        ("combined", 0, "baseline"),
        ("combined", 1, "baseline"),
        ("combined_grouped", 0, None),
        ("combined_grouped", 1, None),
    ]
    # the statistics job waits for the baseline's predictions and reads its manifest for the source images
    needed = inputs(plan, "stats", "res", experiment="leakage")
    assert "res/runs/combined/cvm_cervix/none/seed1/predictions_test.csv" in needed["predictions"]
    assert "res/data/combined/manifest.csv" in needed["manifests"]
    assert not any(e.get("arm") for e in plan.stats_entries("main", "res"))


def test_precisions_are_one_table_the_schema_and_the_rules_agree_with():
    schema = yaml.safe_load((REPO / "src" / "cvm_cervix" / "config.schema.yaml").read_text())
    enums = re.findall(r"enum: \[(fp16[^\]]*)\]", (REPO / "src" / "cvm_cervix" / "config.schema.yaml").read_text())
    assert schema and enums and [e.strip() for e in enums[0].split(",")] == list(COMPRESSED)
    rules = {p.rule for p in PRECISIONS.values()}
    assert rules == {"compress_half", "compress_onnx", "compress_dynamic"}
    assert set(BENCHMARKS) >= rules
    assert sorted(p for r in rules for p in rule_precisions(r)) == sorted(COMPRESSED)
    assert rule_artifact("compress_onnx") == "model.onnx" and rule_artifact("compress_dynamic") == "weights.pt"
    assert PRECISIONS["int8"].device == "cpu" and PRECISIONS["fp16"].gpu
    assert "calibrated on 20 training images" in PRECISIONS["int8"].describe("cpu", 20)
    assert PRECISIONS["bf16"].describe("cuda:0") == "bfloat16 weights, run in bfloat16 on the GPU"


def test_rule_files_take_their_paths_from_the_plan():
    """No rule file types a results path or a run folder out: every input, output, log and benchmark
    comes from the plan's table, so renaming a path there renames it everywhere."""
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        assert "{RESULTS}/" not in text, smk.name
        assert "seed{{seed}}" not in text and "runs/" not in text, smk.name


def test_split_seeds_repeat_every_run_over_splits_of_the_same_images():
    plan = Plan(
        config(
            herlev={"dataset": "other", "models": ["cvm_cervix", "resnet18"], "seeds": [0], "split_seeds": [0, 4, 5]},
            main={"dataset": "syn", "models": ["cvm_cervix"]},
        )
    )
    # the dataset's own split_seed (0) is the dataset itself: the paper's paths do not move
    assert plan.datasets == ["other", "other.split4", "other.split5", "syn"]
    runs = plan.experiment_runs("herlev")
    assert [(r.dataset, r.model) for r in runs] == [
        (d, m) for m in ("cvm_cervix", "resnet18") for d in ("other", "other.split4", "other.split5")
    ]
    # shown in detail, compressed and analysed: the first split's first seed
    assert plan.first_seed_runs("herlev") == [
        Run("other", "cvm_cervix", "none", 0),
        Run("other", "resnet18", "none", 0),
    ]
    # another split reads the same synthetic images and draws its split with its own seed
    assert inputs(plan, "prepare", "res", dataset="other.split4") == {"root": "res/synthetic/other"}
    from cvm_cervix.runs import dataset_spec

    spec = dataset_spec(plan.config, "other.split4")
    assert (spec["split_seed"], spec["sample_seed"], spec["split_of"], spec["classes"]) == (4, 0, "other", "herlev")
    entries = {(e["model"], e["split_seed"]): e for e in plan.stats_entries("herlev", "res")}
    assert set(entries) == {(m, s) for m in ("cvm_cervix", "resnet18") for s in (0, 4, 5)}
    assert entries[("resnet18", 5)]["predictions"] == "res/runs/other.split5/resnet18/none/seed0/predictions_test.csv"
    assert entries[("resnet18", 5)]["test_train_ratio"] == pytest.approx(0.2 / 0.6)
    bench = plan.benchmark_files("res")
    assert "res/benchmarks/synthesize/other.tsv" in bench and not any("synthesize/other.split" in f for f in bench)
    assert "res/benchmarks/prepare/other.split5.tsv" in bench
    with pytest.raises(KeyError, match="no dataset 'other.splitx'"):
        dataset_spec(plan.config, "other.splitx")


def test_a_split_seed_other_than_the_datasets_own_names_every_split(tmp_path):
    cfg = config(herlev={"dataset": "other", "models": ["cvm_cervix"], "split_seeds": [7, 8]})
    cfg["datasets"]["other"]["split_seed"] = 3
    plan = Plan(cfg)
    assert sorted({r.dataset for r in plan.runs}) == ["other.split7", "other.split8"]
    from cvm_cervix.runs import dataset_spec

    assert dataset_spec(cfg, "other.split7")["sample_seed"] == 3  # the same images the dataset's own seed draws
    # "other" itself is not prepared, but its rendered images are read: a value of the dataset wildcard
    assert plan.datasets == ["other.split7", "other.split8"] and "other" in plan.dataset_names
    # nothing made yet: the split's first missing job is the rendering of its base's images
    from cvm_cervix.status import missing_because

    failure = missing_because(plan, tmp_path, "manifest", dataset="other.split7")
    assert failure.rule == "synthesize" and failure.log == "logs/synthesize/other.log"


def test_a_split_of_a_combined_set_prepares_its_parts_once():
    cfg = validate_config(
        {
            "datasets": {
                "a": {"kind": "synthetic"},
                "b": {"kind": "synthetic", "classes": "herlev"},
                "both": {"kind": "combined", "parts": ["a", "b"]},
            },
            "train": {"epochs": 1, "img_size": 32},
            "experiments": {"e": {"dataset": "both", "models": ["resnet18"], "split_seeds": [5, 6]}},
        }
    )
    plan = Plan(cfg)
    assert plan.datasets == ["a", "b", "both.split5", "both.split6"]
    assert inputs(plan, "prepare", "res", dataset="both.split6") == {
        "part_a": "res/data/a/manifest.csv",
        "part_b": "res/data/b/manifest.csv",
        "splits_a": "res/data/a/splits.csv",
        "splits_b": "res/data/b/splits.csv",
    }


def test_the_jobs_table_covers_every_rule_and_every_results_file():
    """One table of what each job makes and reads: every rule of the workflow but the report is in it,
    every file template of the plan is made by exactly one job, and every job has a log."""
    rules = set(
        re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")), re.M)
    )
    compress = {r for r in rules if r.startswith("compress_")}
    assert set(OUTPUTS) == (rules - compress - {"report"}) | {"compress"}
    made = [key for keys in OUTPUTS.values() for key in keys]
    assert len(made) == len(set(made)) and set(made) | {
        "run",
        "compressed",
        "checkpoint",
        "report",
        "report_files",
    } == set(PATHS)
    assert set(OUTPUTS) <= set(LOGS)
    assert PRODUCER["train_info"] == "train" and PRODUCER["manifest"] == "prepare"


def test_a_missing_file_is_traced_to_the_first_job_of_its_chain(tmp_path):
    from cvm_cervix.status import missing_because

    cfg = config(main={"dataset": "syn", "models": ["cvm_cervix"], "compress": ["int8"]})
    plan = Plan(cfg)
    run = run_values(Run("syn", "cvm_cervix", "none", 0))
    chain = ["synthetic", "manifest", "cache", "weights", "metrics"]  # rendered, prepared, cached, trained, evaluated
    rules = ["synthesize", "prepare", "cache", "train", "evaluate"]
    values = {"synthetic": {"dataset": "syn"}, "manifest": {"dataset": "syn"}, "cache": {"dataset": "syn", "size": 32}}
    for made, rule in zip([None, *chain], rules):
        if made is not None:
            target = tmp_path / path(made, "", **values.get(made, run))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
            if made == "manifest":
                (tmp_path / path("classes", "", dataset="syn")).touch()
            if made == "weights":
                for key in ("history", "train_info"):
                    (tmp_path / path(key, "", **run)).touch()
        failure = missing_because(plan, tmp_path, "compressed_metrics", precision="int8", **run)
        assert failure.rule == rule, (made, failure)
    assert needs(plan, "compress", precision="int8", **run)[0].key == "weights"


def test_the_16_bit_type_is_a_setting_of_mixed_precision_runs_only():
    """amp_dtype decides a run's result only where mixed precision is on; "auto" (what every run did
    before the key existed) stays out of the params, so neither case retrains a finished run."""
    cfg = config(
        variants={"amp": {"amp": True}, "fp16": {"amp": True, "amp_dtype": "float16"}, "fp32": {"amp": False}},
        main={"dataset": "syn", "models": ["cvm_cervix"], "variants": ["default", "amp", "fp16", "fp32"]},
    )
    plan = Plan(cfg)
    params = {
        v: plan.train_params(Run("syn", "cvm_cervix", v, 0)) for v in ("none", "none+amp", "none+fp16", "none+fp32")
    }
    assert params["none+fp16"]["amp_dtype"] == "float16" and params["none+fp16"]["amp"] is True
    assert "amp_dtype" not in params["none+amp"] and "amp_dtype" not in params["none+fp32"]
    assert params["none"]["amp"] is True and "amp_dtype" not in params["none"]  # train.amp's default: on


def test_the_16_bit_type_follows_the_gpu_and_the_key(monkeypatch):
    import pytest
    import torch

    from cvm_cervix.engine import amp_dtype, loss_scaler, precision_name
    from cvm_cervix.errors import CvmError

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert amp_dtype(cpu, True, "float16") is None  # float32 on the CPU, whatever the keys say
    assert amp_dtype(cuda, False, "float16") is None
    for bf16, auto in ((True, "bfloat16"), (False, "float16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, _bf16=bf16, **k: _bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Quadro RTX 4000")
        assert amp_dtype(cuda, True, "auto") == auto
        assert amp_dtype(cuda, True, "float16") == "float16"
        assert precision_name(cuda, True) == f"{auto} autocast"  # a run recorded before amp_dtype
        assert precision_name(cuda, "float16") == "float16 autocast" and precision_name(cpu, "float16") == "float32"
    with pytest.raises(CvmError, match="amp_dtype is bfloat16 but Quadro RTX 4000 has no bfloat16; use float16"):
        amp_dtype(cuda, True, "bfloat16")
    with pytest.raises(CvmError, match="use one of auto, float16, bfloat16"):
        amp_dtype(cuda, True, "fp8")
    # the loss scaler is asked for exactly when the type is float16 (the scaler turns itself off without CUDA)
    asked = []
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: asked.append((device, enabled)))
    for dtype in ("float16", "bfloat16", None):
        loss_scaler(dtype)
    assert asked == [("cuda", True), ("cuda", False), ("cuda", False)]


def test_the_fusion_heads_keys_decide_only_mlp_head_runs_and_only_when_set():
    cfg = config(
        variants={"relu": {"head_activation": "relu", "head_hidden": 512}},
        main={"dataset": "syn", "models": ["cvm_cervix", "resnet18"], "variants": ["default", "relu"]},
    )
    plan = Plan(cfg)
    assert not {"head_activation", "head_hidden", "head_dropout"} & set(
        plan.train_params(Run("syn", "cvm_cervix", "none", 0))
    )
    relu = plan.train_params(Run("syn", "cvm_cervix", "none+relu", 0))
    assert (relu["head_activation"], relu["head_hidden"]) == ("relu", 512) and "head_dropout" not in relu
    assert "head_activation" not in plan.train_params(Run("syn", "resnet18", "none+relu", 0))


def test_the_same_settings_in_another_order_are_the_same_run():
    """Snakemake compares a rule's params by their repr: a dict in another key order would retrain every run."""
    cfg = config(main={"dataset": "syn", "models": ["cvm_cervix"]})
    validate_config(cfg)
    reordered = copy.deepcopy(cfg)
    reordered["train"] = dict(reversed(list(cfg["train"].items())))
    run = Run("syn", "cvm_cervix", "none", 0)
    params = Plan(cfg).train_params(run)
    assert list(reordered["train"]) != list(cfg["train"])
    assert repr(Plan(reordered).train_params(run)) == repr(params) and list(params) == sorted(params)
    changed = copy.deepcopy(cfg)
    changed["train"]["lr"] = cfg["train"]["lr"] * 2
    assert repr(Plan(changed).train_params(run)) != repr(params)


def test_every_gpu_rule_has_its_cluster_resources_and_is_documented():
    """A GPU rule without a set-resources entry gets the profile's CPU defaults on a cluster."""
    rules = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), re.M):
            rules[name] = re.search(r"^\s+gpu=1,", body, re.M) is not None
    gpu_rules = sorted(name for name, gpu in rules.items() if gpu)
    assert {"train", "evaluate", "robustness", "analyse"} <= set(gpu_rules), gpu_rules
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    running = (REPO / "docs" / "running.md").read_text()
    for name in gpu_rules:
        assert name in slurm["set-resources"], f"profiles/slurm has no set-resources entry for GPU rule {name}"
        assert f"`{name}`" in running.split("### Clusters that want")[1], f"docs/running.md omits GPU rule {name}"


def test_the_catalog_claims_only_what_holds():
    """Module use from the catalog has no src/: the conda environment alone cannot run it (it lacks the
    package), and the catalog adds --cores all itself."""
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    env = yaml.safe_load((REPO / "envs" / "cvm_cervix.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    installs_package = any("cvm-cervix" in p or "cvm_cervix" in p for p in pip)
    assert catalog["usage"]["software-stack-deployment"]["conda"] is installs_package
    assert "--cores" not in (catalog["usage"]["mandatory-flags"]["flags"] or "")


def test_the_augments_are_one_list_the_schema_and_the_rules_agree_with():
    from cvm_cervix.configfile import load_schema as schema
    from cvm_cervix.runs import AUGMENTS

    enum = schema()["properties"]["experiments"]["additionalProperties"]["properties"]["augment"]["items"]["enum"]
    assert tuple(enum) == AUGMENTS
    assert "AUGMENTS" in (REPO / "workflow" / "rules" / "common.smk").read_text()
