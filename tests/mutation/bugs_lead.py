"""Planted bugs for what the lead added while merging (layers)."""

BUGS = [
    dict(name="report-plots-imports-demo-back", path="src/bnlab/report/plots.py",
         old="from .settings import Setting\n", new="from .demo import Setting\n",
         tests=["tests/project/test_import_layers.py::test_no_import_cycles_even_through_lazy_imports"]),
    dict(name="check-groups-gives-up-too-early", path="src/bnlab/axes.py",
         old="def _divisors(n: int, limit: int = 10**6)", new="def _divisors(n: int, limit: int = 10**3)",
         tests=["tests/core/test_axes.py::test_a_wrong_groups_lists_the_divisors_at_once_even_for_a_huge_channel_count"]),
    dict(name="python-m-bnlab-import-unguarded", path="src/bnlab/__main__.py",
         old="except KeyboardInterrupt:  # Ctrl-C while",
         new="except ZeroDivisionError:  # Ctrl-C while",
         tests=["tests/apps/test_cli_bad_input.py::test_ctrl_c_while_python_m_bnlab_imports_the_command_is_one_line"]),
]
