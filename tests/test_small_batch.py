"""bnlab experiment small-batch: a tiny real run (real MNIST digits, real training, real recalibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bnlab.nn
from bnlab.cli import main
from bnlab.report.small_batch import for_report, run_small_batch, summarize

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("sb")
    results = run_small_batch(out, batch_sizes=(2, 4), seeds=(0, 1), samples=16, recal_samples=16,
                              progress=False, log=None)  # fmt: skip
    return out, results


@pytest.mark.slow  # 12 real training runs on 28×28 MNIST
def test_tiny_run_writes_results_and_figure(tiny):
    out, results = tiny
    assert (out / "small-batch.png").read_bytes()[:8] == PNG
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"] == results["summary"]
    runs = saved["runs"]
    assert {(r["m"], r["norm"], r["seed"]) for r in runs} == {
        (m, n, s) for m in (2, 4) for n in ("none", "activation", "channel") for s in (0, 1)
    }
    for r in runs:
        assert r["steps"] == 16 // r["m"], "every run sees the same number of samples"
        assert r["lr"] == pytest.approx(0.1 * r["m"] / 32), "linear scaling of the learning rate"
        assert 0.0 <= r["test_recal"]["accuracy"] <= 1.0
        if r["norm"] == "none":
            assert r["test_recal"] == r["test_ema"]  # nothing to recalibrate


@pytest.mark.slow  # 12 real training runs on 28×28 MNIST
def test_summary_is_the_mean_over_seeds(tiny):
    _, results = tiny
    for norm in ("none", "activation", "channel"):
        for m in (2, 4):
            accs = [r["test_recal"]["accuracy"] for r in results["runs"] if r["norm"] == norm and r["m"] == m]
            s = results["summary"][norm][str(m)]
            assert s["mean"] == pytest.approx(float(np.mean(accs)))
            assert (s["min"], s["max"]) == (min(accs), max(accs))
    assert summarize(results["runs"]) == results["summary"]


@pytest.mark.slow  # 12 real training runs on 28×28 MNIST
def test_set_sizes_are_m_and_m_p_q(tiny):
    _, results = tiny
    for m in (2, 4):
        sizes = {row["layer"]: row for row in results["set_sizes"][str(m)]}
        assert sizes["features.bn1"]["activation"] == m and sizes["features.bn1"]["channel"] == m * 28 * 28
        assert sizes["features.bn2"]["channel"] == m * 14 * 14
        assert sizes["head.bn3"]["activation"] == sizes["head.bn3"]["channel"] == m


def test_with_two_values_per_set_per_activation_bn_keeps_only_a_sign():
    """The docs' claim: at m = 2 each per-activation x̂ is −1 or +1, whatever the input (torch.nn agrees)."""
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64) * 7 + 3
    bn = bnlab.nn.BatchNorm2d(3, per="activation", spatial_size=(5, 5), eps=1e-12).double().train()
    y = bn(x)
    np.testing.assert_allclose(y.abs().detach().numpy(), 1.0, atol=1e-6)
    ref = torch.nn.BatchNorm1d(3 * 25, eps=1e-12, affine=False).double().train()(x.reshape(2, -1))
    np.testing.assert_allclose(y.detach().reshape(2, -1).numpy(), ref.detach().numpy(), atol=1e-9)
    # per channel the same two examples pool 2·5·5 = 50 values: x̂ takes many values
    yc = bnlab.nn.BatchNorm2d(3, eps=1e-12).double().train()(x)
    assert len(np.unique(np.round(yc.detach().numpy(), 6))) > 100


@pytest.mark.slow  # 12 real training runs on 28×28 MNIST
def test_demo_report_prefers_the_users_run(tiny, tmp_path):
    out, results = tiny
    (tmp_path / "small-batch").mkdir()
    (tmp_path / "small-batch" / "results.json").write_text((out / "results.json").read_text())
    got = for_report(tmp_path)
    assert got["source"] == "user" and got["summary"] == results["summary"]
    ref = for_report(tmp_path / "elsewhere")
    if ref is not None:  # the reference run shipped with bnlab
        assert ref["source"] == "reference"
        for by_m in ref["summary"].values():
            for s in by_m.values():
                assert s["mean"] == pytest.approx(float(np.mean(s["accuracies"])))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--batch-sizes", "1,2"], ["at least 2"]),
        (["--batch-sizes", "two"], ["at least 2"]),
        (["--samples", "8", "--batch-sizes", "2,16"], ["samples=8", "m = 16"]),
        (["--seeds", "x"], ["seeds"]),
        (["--data", "/nonexistent/mnist.npz"], ["/nonexistent/mnist.npz"]),
    ],
)
def test_bad_arguments_name_the_problem(args, words, capsys, tmp_path):
    code = main(["experiment", "small-batch", "--out", str(tmp_path / "o"), "--quiet", "--lang", "en", *args])
    err = capsys.readouterr().err
    assert code == 2
    for w in words:
        assert w in err
    assert not (tmp_path / "o" / "results.json").exists()


def test_help_is_bilingual(capsys):
    assert main(["experiment", "small-batch", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "mini-batch sizes" in out and "tamaños de minilote" in out


def test_the_docs_table_is_the_shipped_reference_run():
    """docs/small-batch.md quotes the reference run the report shows: every cell, to the printed digit."""
    import re
    from pathlib import Path

    from bnlab.report.small_batch_reference import REFERENCE

    doc = Path(__file__).resolve().parents[1] / "docs" / "small-batch.md"
    rows = re.findall(r"^\| (\d+) \| (.+) \| (.+) \| (.+) \|$", doc.read_text(encoding="utf-8"), re.M)
    table = {m: cells for m, *cells in rows if m in REFERENCE["summary"]["none"]}
    assert sorted(table, key=int) == [str(m) for m in REFERENCE["config"]["batch_sizes"]]
    for m, cells in table.items():
        for norm, cell in zip(("none", "activation", "channel"), cells, strict=True):
            s = REFERENCE["summary"][norm][m]
            assert cell == f"{100 * s['mean']:.1f}% ({100 * s['min']:.1f}–{100 * s['max']:.1f})", (m, norm)
    assert f"**{REFERENCE['seconds']:.0f} s of wall-clock time**" in doc.read_text(encoding="utf-8")
