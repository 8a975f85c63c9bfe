"""The training-curve figures: readable however many panels a family logs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from genzoo import plots


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[plt.Figure]:
    """The figures the plots module saves, kept open to be looked at."""
    figures: list[plt.Figure] = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    yield figures
    for fig in figures:
        plt.close(fig)


def panel_rows(fig: plt.Figure) -> list[int]:
    """How many visible panels each row of the figure holds, top row first."""
    tops: dict[float, int] = {}
    for ax in fig.axes:
        if ax.axison:
            top = round(ax.get_position().y1, 3)
            tops[top] = tops.get(top, 0) + 1
    return [tops[top] for top in sorted(tops, reverse=True)]


def test_a_gans_seven_panels_wrap_into_rows_with_whole_epoch_ticks(drawn) -> None:
    names = [f"metric_{i}" for i in range(7)]
    metrics = [{"epoch": e, **{n: e * 0.5 for n in names}} for e in (1, 2, 3)]
    plots.draw_curves(metrics, {n: [n] for n in names}, None, None, Path("curves.png"))
    plots.draw_metric_panels({"run": metrics}, {n: n for n in names}, Path("panels.png"))
    for fig in drawn:
        assert panel_rows(fig) == [3, 3, 1]
        for ax in fig.axes[:7]:
            assert all(float(tick).is_integer() for tick in ax.get_xticks())
