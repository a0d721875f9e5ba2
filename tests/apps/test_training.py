"""Training loop: history, percentiles, eval mode, determinism, checkpoints, exact resume, Ctrl-C."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from bnlab.inference import load_checkpoint
from bnlab.models import PaperMLP, SmallCNN
from bnlab.training import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainingInterrupted,
    evaluate,
    fit,
    load_trained,
    seed_everything,
)


def _model(norm="channel", activation="relu", seed=0):
    seed_everything(seed)
    return SmallCNN(1, (8, 8), 10, norm=norm, activation=activation, widths=(8, 16), hidden=32)


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_history_has_one_row_per_step_and_evals(small):
    cfg = TrainConfig(lr=0.1, batch_size=32, epochs=2, eval_every=3)
    r = fit(_model(), small, cfg, progress=False)
    steps = 2 * (240 // 32)
    h = r.history
    assert h["step"] == list(range(1, steps + 1))
    assert h["epoch"] == [0] * 7 + [1] * 7
    for key in ("loss", "accuracy", "p15", "p50", "p85"):
        assert len(h[key]) == steps and all(np.isfinite(h[key]))
    assert all(a <= b <= c for a, b, c in zip(h["p15"], h["p50"], h["p85"], strict=True))
    # evaluations: step 0, every 3 steps, and at each epoch end, once each
    assert h["eval_step"] == [0, 3, 6, 7, 9, 12, 14]
    assert r.final_eval["accuracy"] == evaluate(r.model, small.x_val, small.y_val)["accuracy"]
    assert not r.model.training


def test_first_step_percentiles_are_those_of_the_first_batch(small):
    model = _model("none", "sigmoid")
    cfg = TrainConfig(lr=0.1, batch_size=32, epochs=1, record_layer="head.act3", record_unit=5, seed=3)
    # the batch fit will draw first, and the pre-activation of unit 5 before any update
    first = torch.randperm(240, generator=torch.Generator().manual_seed(3 * 1_000_003))[:32]
    with torch.no_grad():
        pre = model.head[:2](model.features(small.x_train[first]))[:, 5].numpy()
    r = fit(model, small, cfg, progress=False)
    np.testing.assert_allclose(
        [r.history[k][0] for k in ("p15", "p50", "p85")], np.percentile(pre, [15, 50, 85]), rtol=1e-5, atol=1e-6
    )
    assert r.recorded == "head.act3"


def test_evaluate_uses_running_statistics(small):
    model = _model()
    fit(model, small, TrainConfig(lr=0.1, epochs=1), progress=False)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = evaluate(model, small.x_test, small.y_test)
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running statistics untouched
    # eval mode: predictions of one example do not depend on the rest of the batch
    model.eval()
    with torch.no_grad():
        alone = model(small.x_test[:1])
        together = model(small.x_test[:10])[:1]
    torch.testing.assert_close(alone, together)
    assert 0.0 <= res["accuracy"] <= 1.0


def test_same_seed_same_run(small):
    cfg = TrainConfig(lr=0.1, epochs=1, optimizer="momentum")
    a = fit(_model(seed=1), small, cfg, progress=False)
    b = fit(_model(seed=1), small, cfg, progress=False)
    assert a.history["loss"] == b.history["loss"]
    _assert_same_weights(a.model, b.model)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_resume_after_epoch_equals_uninterrupted(small, tmp_path, optimizer):
    cfg = dict(lr=0.01 if optimizer == "adam" else 0.05, optimizer=optimizer, batch_size=32, seed=5)
    full = fit(_model(seed=2), small, TrainConfig(epochs=3, **cfg), out_dir=tmp_path / "a", progress=False)
    fit(_model(seed=2), small, TrainConfig(epochs=1, **cfg), out_dir=tmp_path / "b", progress=False)
    # a fresh process would build the model with a different init: the checkpoint must override it
    resumed = fit(_model(seed=99), small, TrainConfig(epochs=3, **cfg), out_dir=tmp_path / "b", resume=True,
                  progress=False)  # fmt: skip
    _assert_same_weights(full.model, resumed.model)
    assert full.history["loss"] == resumed.history["loss"]
    assert full.history["eval_accuracy"] == resumed.history["eval_accuracy"]


def test_ctrl_c_saves_and_resume_continues_exactly(small, tmp_path):
    cfg = TrainConfig(lr=0.05, optimizer="momentum", epochs=2, batch_size=16, record_unit=2)
    full = fit(_model(seed=3), small, cfg, out_dir=tmp_path / "a", progress=False)

    def press_ctrl_c(step):
        if step == 20:  # mid-epoch 1 (15 steps per epoch)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="interrupted at step 20/30") as info:
        fit(_model(seed=3), small, cfg, out_dir=tmp_path / "b", progress=False, on_step=press_ctrl_c)
    assert info.value.step == 20 and info.value.checkpoint == tmp_path / "b" / CHECKPOINT_NAME
    assert isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    saved = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert saved["step"] == 20 and len(saved["history"]["loss"]) == 20

    resumed = fit(_model(seed=4), small, cfg, out_dir=tmp_path / "b", resume=True, progress=False)
    _assert_same_weights(full.model, resumed.model)
    for key in ("loss", "accuracy", "p15", "p50", "p85", "eval_step", "eval_accuracy"):
        assert full.history[key] == resumed.history[key], key


def test_resume_refuses_other_settings(small, tmp_path):
    fit(_model(), small, TrainConfig(lr=0.1, epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"training settings differ \(lr: 0.1 -> 0.2\)"):
        fit(_model(), small, TrainConfig(lr=0.2, epochs=2), out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="different model"):
        fit(_model("none"), small, TrainConfig(lr=0.1, epochs=2), out_dir=tmp_path, resume=True, progress=False)


def test_load_trained_rebuilds_the_model(small, tmp_path):
    r = fit(_model("activation"), small, TrainConfig(lr=0.1, epochs=1), out_dir=tmp_path, progress=False,
            meta={"dataset": "digits"})  # fmt: skip
    model, saved = load_trained(tmp_path / CHECKPOINT_NAME)
    assert saved["meta"] == {"dataset": "digits"} and not model.training
    _assert_same_weights(r.model, model)
    with pytest.raises(ValueError, match="not a bnlab training checkpoint"):
        from bnlab.inference import save_checkpoint

        save_checkpoint(tmp_path / "other.pt", {"weights": torch.zeros(2)})
        load_trained(tmp_path / "other.pt")


def test_mlp_trains_on_flattened_images(small):
    seed_everything(0)
    model = PaperMLP(in_features=64, norm="activation")
    r = fit(model, small, TrainConfig(lr=0.5, epochs=3, batch_size=20), progress=False)
    assert r.final_eval["accuracy"] > 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(optimizer="rmsprop"), "unknown optimizer"),
        (dict(lr=0), "lr must be a positive number"),
        (dict(lr=float("nan")), "lr must be a positive number"),
        (dict(batch_size=1), "at least 2"),
        (dict(epochs=0), "epochs must be a positive integer"),
        (dict(eval_split="train"), "eval_split"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_batch_larger_than_data(small):
    with pytest.raises(ValueError, match="larger than the training set"):
        fit(_model(), small, TrainConfig(batch_size=500), progress=False)


# -- bnlab train: the old spellings of --norm and the new --norm/--per train the same model -------------------
@pytest.mark.parametrize(
    "old, new",
    [
        (["--model", "mlp", "--norm", "channel"], ["--model", "mlp", "--per", "channel"]),
        pytest.param(["--norm", "channel"], ["--norm", "batch", "--per", "channel"], marks=pytest.mark.slow),
        pytest.param(["--norm", "activation"], ["--norm", "batch", "--per", "activation"], marks=pytest.mark.slow),
    ],
)
def test_cli_old_and_new_spellings_train_the_same_model(tmp_path, capsys, old, new):
    from bnlab.cli import main

    common = ["train", "--epochs", "1", "--seed", "3", "--quiet", "--lang", "en"]
    assert main([*common, *old, "--out", str(tmp_path / "old")]) == 0
    assert main([*common, *new, "--out", str(tmp_path / "new")]) == 0
    a, b = (load_checkpoint(tmp_path / d / CHECKPOINT_NAME) for d in ("old", "new"))
    assert a["model_spec"] == b["model_spec"]
    assert (a["model_spec"]["norm"], a["model_spec"]["per"]) == ("batch", new[new.index("--per") + 1])
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    capsys.readouterr()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--norm", "layer", "--per", "activation"], "--per is for --norm batch only"),
        (["--norm", "activation", "--per", "channel"], "old spelling of --norm batch --per activation"),
    ],
)
def test_cli_per_that_does_not_apply_is_refused_before_anything_is_written(tmp_path, capsys, args, message):
    from bnlab.cli import main

    out = tmp_path / "run"
    assert main(["train", *args, "--out", str(out), "--lang", "en"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
