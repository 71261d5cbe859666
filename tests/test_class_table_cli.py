"""``--class-table`` takes the built-in tables by name as well as files."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from geoembed.cli import main
from geoembed.export import read_class_names
from geoembed.labels.classes import DYNAMIC_WORLD_CLASSES, builtin_class_tables

pytestmark = pytest.mark.shared_data


def _classify(aef_tif: Path, csv: Path, out: Path, table: str) -> object:
    args = ["--scheduler", "threads", "-q", "classify", str(aef_tif), "--training", str(csv)]
    args += ["--label-column", "dw_label", "--class-table", table, "-o", str(out)]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("name", ["dynamic_world", "DW"])
def test_builtin_name(aef_tif: Path, shared_data: Path, tmp_path: Path, name: str) -> None:
    csv = shared_data / "aef" / "dw_samples_2024_iowa_ag.csv"
    out = tmp_path / "map.tif"
    res = _classify(aef_tif, csv, out, name)
    assert res.exit_code == 0, res.output
    names = read_class_names(out)
    expected = {int(i): n for i, n in zip(DYNAMIC_WORLD_CLASSES.ids, DYNAMIC_WORLD_CLASSES.names)}
    assert names and all(expected[k] == v for k, v in names.items())
    assert "crops" in names.values()


def test_unknown_name_lists_the_builtins(aef_tif: Path, shared_data: Path, tmp_path: Path) -> None:
    csv = shared_data / "aef" / "dw_samples_2024_iowa_ag.csv"
    res = _classify(aef_tif, csv, tmp_path / "map.tif", "dynamic_wrld")
    assert res.exit_code == 2
    assert "neither a class table file nor a built-in table" in res.output
    for name in builtin_class_tables():
        assert name in res.output
    assert not (tmp_path / "map.tif").exists()
