import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("OMP_NUM_THREADS", "2")


def write_image(path: Path, seed: int = 0, size=(24, 24), fmt=None) -> Path:
    """A small random RGB image; ``seed`` makes distinct files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


@pytest.fixture
def imagefolder(tmp_path):
    """<class>/<image>.png with 3 classes of 10 images each."""
    root = tmp_path / "folder"
    for c, cls in enumerate(["alpha", "beta", "gamma"]):
        for i in range(10):
            write_image(root / cls / f"{cls}_{i}.png", seed=100 * c + i)
    return root


def prepared_synthetic(base: Path, classes: str, per_class: int, name: str = "tiny") -> Path:
    """A synthetic class set rendered, prepared and cached at 32 px under ``base``; returns its data folder."""
    from cvm_cervix.data import build_cache, make_synthetic_dataset, prepare_dataset, read_manifest

    make_synthetic_dataset(base / "images", classes, per_class=per_class, image_size=32, seed=0)
    out = base / "data"
    prepare_dataset(name, {"kind": "synthetic", "classes": classes}, out, root=base / "images")
    build_cache(read_manifest(out / "manifest.csv")["path"].tolist(), 32, out / "cache_32.npy")
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A prepared and cached synthetic dataset (11 classes, 6 per class, 32 px)."""
    return prepared_synthetic(tmp_path_factory.mktemp("tiny"), "combined", 6)


@pytest.fixture(scope="session")
def public_cache(tmp_path_factory):
    """A weights cache holding, for every registered model, files shaped exactly like its public
    pretrained ones (tests/weights_cache.py); returns (folder, {file or hub id: its tensors}).
    Nothing may be fetched while it is in use (the hub is offline)."""
    import huggingface_hub.constants
    import torch
    from weights_cache import write_public_cache

    from cvm_cervix.models import model_names

    old = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    hub_dir = torch.hub.get_dir()
    cache = tmp_path_factory.mktemp("weights")
    yield cache, write_public_cache(cache, model_names())
    huggingface_hub.constants.HF_HUB_OFFLINE = old
    torch.hub.set_dir(hub_dir)  # create_model points torch.hub at the cache


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's chromium + chromium-driver) driven by selenium, with the network off.

    Installs the two packages with apt-get when they are missing and this runs as root; skips where
    they cannot be had, unless CVM_BROWSER_TEST=1 (as in CI), where that is a failure.
    """
    import shutil
    import subprocess

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], env=env, capture_output=True)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if webdriver is None or not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CVM_BROWSER_TEST") == "1":
            pytest.fail(
                "headless Chromium is required here: apt-get install chromium chromium-driver; pip install selenium"
            )
        pytest.skip("no chromium/chromium-driver/selenium (CI installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-unsafe-swiftshader",
        "--use-angle=swiftshader",
        "--window-size=1300,900",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    # Any alert() a page runs is recorded instead of shown: a test can assert that none ran.
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "window.__alerts = []; window.alert = m => window.__alerts.push(String(m));"},
    )
    yield driver
    driver.quit()


def open_page(driver, path: Path, screenshot: Path | None = None) -> list[dict]:
    """Load ``path`` and let its plots render; returns the console messages. Saves a full-page screenshot."""
    import time

    driver.get_log("browser")  # drop what an earlier page logged
    driver.set_window_size(1300, 900)
    driver.get(path.resolve().as_uri())
    for _ in range(60):
        if driver.execute_script("return document.readyState") == "complete":
            break
        time.sleep(0.25)
    time.sleep(1.5)  # plotly draws after load
    if screenshot is not None:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1300, min(height, 20000))
        time.sleep(0.5)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
    return driver.get_log("browser")


def artifact_dir(tmp_path: Path) -> Path:
    """Where a test leaves files for people to look at: $CVM_TEST_ARTIFACTS if set, else its tmp_path."""
    return Path(os.environ.get("CVM_TEST_ARTIFACTS") or tmp_path)


@pytest.fixture(scope="session")
def real_blood_cells(tmp_path_factory):
    """The real blood-cell images of ../shared/data, prepared and cached at 32 px."""
    from cvm_cervix.data import build_cache, prepare_dataset, read_manifest

    if not (SHARED_DATA / "pbc").is_dir():
        pytest.skip("real data folder ../shared/data/pbc not present")
    data = tmp_path_factory.mktemp("pbc")
    prepare_dataset("pbc", {"kind": "pbc"}, data, root=SHARED_DATA / "pbc")
    build_cache(read_manifest(data / "manifest.csv")["path"].tolist(), 32, data / "cache_32.npy", threads=2)
    return data
