"""The planted-bug catalog stays plantable: every entry's text occurs exactly once in today's tree, a planted
Python file still parses, its tests exist, and its names are unique (a refactor that moves code must move the
catalog with it)."""

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("mutation_run", ROOT / "tests" / "mutation" / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)
BUGS = run.catalog()


def test_the_catalog_is_not_empty_and_names_are_unique():
    names = [b["name"] for b in BUGS]
    assert len(names) > 50
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("bug", BUGS, ids=[b["name"] for b in BUGS])
def test_each_planted_bug_can_still_be_planted(bug):
    assert run.stale(ROOT, bug) is None, run.stale(ROOT, bug)
    assert bug["new"] != bug["old"]
    assert bug["tests"], "a bug needs the tests that kill it"
    for node in bug["tests"]:
        path = node.split("::")[0]
        assert (ROOT / path).is_file(), f"{node}: no such test file"
        if "::" in node:
            name = node.split("::")[1].split("[")[0]
            assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), f"{node}: no such test"


@pytest.mark.parametrize("bug", [b for b in BUGS if b["path"].endswith(".py")],
                         ids=[b["name"] for b in BUGS if b["path"].endswith(".py")])  # fmt: skip
def test_a_planted_python_file_still_parses(bug):
    """A plant that breaks the syntax (an `old` text matched inside a line indented deeper than it was written
    for) makes its tests error out, not fail: the bug is never tested."""
    text = (ROOT / bug["path"]).read_text(encoding="utf-8").replace(bug["old"], bug["new"])
    ast.parse(text, filename=bug["path"])
