"""Shared test helpers: an independent float64 batch norm, written without bnlab; a small slice of the digits;
waiting on a subprocess; one headless Chromium for the browser tests."""

from __future__ import annotations

import os
import shutil
import time
import types

import numpy as np
import pytest


def bn_float64(x, gamma, beta, axes, eps=1e-5):
    """Alg. 1 by brute force: move the pooled axes to the front, flatten, normalize each column."""
    x = np.asarray(x, dtype=np.float64)
    keep = [a for a in range(x.ndim) if a not in axes]
    perm = list(axes) + keep
    xt = np.transpose(x, perm)
    m = int(np.prod([x.shape[a] for a in axes]))
    cols = xt.reshape(m, -1)
    mu = cols.sum(axis=0) / m
    var = ((cols - mu) ** 2).sum(axis=0) / m
    xhat = (cols - mu) / np.sqrt(var + eps)
    y = xhat * np.asarray(gamma, np.float64).reshape(-1) + np.asarray(beta, np.float64).reshape(-1)
    y = np.transpose(y.reshape(xt.shape), np.argsort(perm))
    fshape = tuple(x.shape[a] for a in keep)
    return y, mu.reshape(fshape), var.reshape(fshape)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def wait_for_file(path, proc, seconds: float) -> None:
    """Wait until ``path`` exists (e.g. a run's first checkpoint), failing if ``proc`` ends or time runs out."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {path.name} after {seconds} s"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def small():
    """A small slice of scikit-learn's digits: 240 train, 60 val, 60 test examples."""
    from bnlab.data import load_digits

    ds = load_digits(seed=0)
    return types.SimpleNamespace(
        x_train=ds.x_train[:240], y_train=ds.y_train[:240],
        x_val=ds.x_val[:60], y_val=ds.y_val[:60],
        x_test=ds.x_test[:60], y_test=ds.y_test[:60],
    )  # fmt: skip


# ------------------------------------------------------------------------------ the browser tests' Chromium
def _find(*names):
    return next((p for p in map(shutil.which, names) if p), None)


CHROMIUM = _find("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _find("chromedriver")
#: Chromium's own background traffic off: no component updates, sync, metrics or first-run fetches
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-domain-reliability", "--metrics-recording-only", "--no-pings", "--disable-features=Translate",
)  # fmt: skip


def start_chromium(window=(1000, 900)):
    """The distribution's Chromium through the local chromedriver, started explicitly.

    The driver's path is given to the Service, so Selenium skips Selenium Manager (no download, no driver
    metadata, no usage statistics: SE_AVOID_STATS is set too, in case a later Selenium calls it anyway)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROMIUM_ARGS, f"--window-size={window[0]},{window[1]}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for every browser test of the run (test_explain_page, test_site)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium and chromedriver installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    driver = start_chromium()
    yield driver
    driver.quit()
