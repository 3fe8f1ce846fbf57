"""Every benchmark name resolves to a runnable function, and cases compute their ratio."""

from __future__ import annotations

import importlib
import inspect

import pytest

from cvloop.app.bench import BENCHES, Case, run
from cvloop.core.errors import CvloopError


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_every_benchmark_resolves(name):
    module, func = BENCHES[name].split(":")
    fn = getattr(importlib.import_module(module), func)
    assert "quick" in inspect.signature(fn).parameters


def test_case_ratio_and_unknown_name():
    assert Case("x", 3.0, "s", "b", 4.0).ratio == 0.75
    assert Case("x", 3.0, "s", "b", 0.0).ratio == 0.0
    with pytest.raises(CvloopError, match="choose from drift"):
        run("nope")


def test_dvc_benchmark_runs_quick(capsys):
    import json

    cases = run("dvc", quick=True)
    assert [c.name for c in cases] == ["dvc.new_version_plus_1pct.seconds"]
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) == {"name", "value", "unit", "baseline", "baseline_value", "ratio"}
    assert line["value"] > 0 and line["baseline_value"] > 0
