"""Installation: the conda environment pins what pyproject.toml pins, and the workflow runs as a module
of another folder with an installed wheel, without the checkout's src/ (templates, schema and the
paper's numbers are package data)."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def test_conda_environment_pins_what_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in project["dependencies"]}
    env = yaml.safe_load((REPO / "envs" / "cvm_cervix.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in pip}
    pinned.pop("snakemake")  # Snakemake runs the jobs; it is not needed inside the rules' environment
    assert conda == pinned
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert project["requires-python"] == ">=3.11" and python == "python=3.11"


def _wheel(tmp_path: Path) -> Path:
    setuptools = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    args = ["--no-build-isolation"] if setuptools >= (77, 0) else []  # else pip fetches a recent setuptools
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *args, "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
    )
    return next((tmp_path / "dist").glob("cvm_cervix-*.whl"))


@pytest.mark.workflow
def test_the_workflow_as_a_module_of_another_folder_with_the_installed_package(tmp_path):
    """As catalog users deploy it (`snakedeploy deploy-workflow`): their own folder, their own Snakefile
    with `module cvm_cervix: snakefile: ...; config: config` and `use rule * from cvm_cervix`, the
    workflow's files elsewhere and without src/, the package imported from the environment (an
    installed wheel: templates, schema and the paper's numbers are package data)."""
    wheel = _wheel(tmp_path)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    package = site / "cvm_cervix"
    for data in ("templates/report.html.j2", "config.schema.yaml", "paper_results.yaml"):
        assert (package / data).is_file(), data

    deployed = tmp_path / "cvm-cervix"  # the workflow's files without src/
    deployed.mkdir()
    for item in ("workflow", "scripts", "envs", "profiles", "report", "config"):
        shutil.copytree(REPO / item, deployed / item)
    assert not (deployed / "src").exists()
    user = tmp_path / "my-screening-study"
    user.mkdir()
    config = {
        "datasets": {"syn": {"kind": "synthetic", "classes": "herlev", "per_class": 6, "image_size": 32}},
        "train": {"img_size": 32, "epochs": 1, "batch_size": 8},
        "experiments": {"e": {"dataset": "syn", "models": ["shufflenet_v2_x0_5"]}},
    }
    (user / "config").mkdir()
    (user / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (user / "Snakefile").write_text(module_snakefile(deployed / "workflow" / "Snakefile"))
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([SNAKEMAKE, "--cores", "2"], cwd=user, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = (user / "results" / "report.html").read_text()
    assert "shufflenet_v2_x0_5" in report and "synthetic" in report.lower()
    assert (user / "results" / "runs" / "syn" / "shufflenet_v2_x0_5" / "none" / "seed0" / "metrics.json").is_file()
    assert not (deployed / "results").exists()  # results land in the user's folder, never the workflow's
    # the jobs imported the installed package: Python cached the bytecode of its modules there
    cached = {p.name.split(".")[0] for p in (package / "__pycache__").glob("*.pyc")}
    assert {"train", "evaluate", "config", "jobs"} <= cached
    assert "collect" in {p.name.split(".")[0] for p in (package / "report" / "__pycache__").glob("*.pyc")}
    assert (user / "results" / ".cvm-cervix.owner").is_file()  # the module's onstart ran: one owner
    # a failed job in module use: the report of what finished, marked INCOMPLETE, as a direct run writes it
    bad = user / "bad_images"
    for cls in ("a", "b"):
        for i in range(4):
            (bad / cls).mkdir(parents=True, exist_ok=True)
            (bad / cls / f"{i}.png").write_bytes(b"not an image")
    config["datasets"]["bad"] = {"kind": "imagefolder", "root": str(bad)}
    config["experiments"]["broken"] = {"dataset": "bad", "models": ["shufflenet_v2_x0_5"]}
    (user / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([SNAKEMAKE, "--cores", "2"], cwd=user, capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    report = (user / "results" / "report.html").read_text()
    assert "INCOMPLETE" in report and "prepare" in report


def module_snakefile(snakefile: Path) -> str:
    """The Snakefile of docs/running.md ("Use it as a module"), with a local copy's path in place of github(...):
    the test runs what the documentation tells users to write."""
    text = (REPO / "docs" / "running.md").read_text()
    block = text[text.index("## Use it as a module") :].split("```python\n", 1)[1].split("```", 1)[0]
    assert "use rule * from cvm_cervix" in block
    return re.sub(r"github\([^\n]*\)[^\n]*", f'"{snakefile}"', block)


def test_the_version_has_one_owner_and_citation_and_changelog_follow_it(capsys):
    """`cvm-cervix --version` says the package's version; CITATION.cff cites the workflow at that version
    and the paper as the preferred citation; CHANGELOG.md has a section for it."""
    import yaml

    import cvm_cervix
    from cvm_cervix.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"cvm-cervix {cvm_cervix.__version__}"
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and str(citation["version"]) == cvm_cervix.__version__
    assert citation["preferred-citation"]["journal"] == "Pattern Recognition"
    assert "CVM-Cervix" in citation["preferred-citation"]["title"]
    assert f"## [{cvm_cervix.__version__}]" in (REPO / "CHANGELOG.md").read_text()
    assert 'dynamic = ["version"]' in (REPO / "pyproject.toml").read_text()


def test_the_readme_stays_short():
    """The README is the page a user reads first: under 300 lines, the details in docs/."""
    assert len((REPO / "README.md").read_text().splitlines()) < 300
