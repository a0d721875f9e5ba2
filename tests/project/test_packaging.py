"""First contact (issue 7, items 10-14): what the README promises, the package metadata, paper-fig1's data."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from bnlab.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
REPO = "https://github.com/bnlab/bnlab"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_links_work_on_the_package_index():
    # a relative link such as docs/demo.md is broken on the index page: every target must be absolute
    targets = re.findall(r"\]\(([^)]+)\)", _readme())
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "http://"))]
    assert not relative, relative
    for t in targets:
        if t.startswith(REPO + "/blob/main/"):
            assert (ROOT / t.removeprefix(REPO + "/blob/main/")).exists(), t  # points at a real file


def test_readme_says_what_pip_install_torch_downloads():
    text = _readme()
    assert "CUDA" in text and "2.5 GB" in text
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    # the two commands themselves are unchanged
    assert "python3 -m pip install torch==2.13.0 && python3 -m pip install . && bnlab demo" in text
    assert 'python3 -m pip install torch==2.13.0 && python3 -m pip install -e ".[test]" && python3 -m pytest -q' in text


def test_one_demo_run_time_everywhere(capsys):
    stated = re.findall(r"about (\d+) seconds", _readme())
    assert len(set(stated)) == 1, stated
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"about {stated[0]} seconds" in help_text and f"unos {stated[0]} segundos" in help_text
    assert "half a minute" not in help_text and "about a minute" not in _readme()


def test_package_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["urls"]["Repository"] == REPO and project["urls"]["Homepage"].startswith(REPO)
    assert project["authors"] and all(a.get("name") for a in project["authors"])
    classifiers = project["classifiers"]
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers)


@pytest.mark.slow
def test_paper_fig1_runs_out_of_the_box_on_the_shipped_mnist(tmp_path, capsys):
    out = tmp_path / "fig1"
    assert main(["experiment", "paper-fig1", "--steps", "3", "--out", str(out), "--quiet", "--lang", "en"]) == 0
    assert "mnist10k.npz" in capsys.readouterr().out
    assert (out / "fig1.png").is_file() and (out / "results.json").is_file()
