"""The training-curve figures: readable however many panels a family logs; animations
written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.animation import FuncAnimation
from PIL import Image

from genzoo import figures, plots
from genzoo.models.binary_vae import BinaryVAE, BinaryVAEConfig
from genzoo.models.hvae import HVAE, HVAEConfig
from genzoo.models.vae import VAE, VAEConfig

SHAPE = (1, 28, 28)


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


@pytest.mark.filterwarnings("ignore:Animation was deleted without rendering")
def test_an_animation_is_whole_or_not_written(tmp_path: Path, monkeypatch) -> None:
    """A GIF stopped while being written leaves the old file as it was and nothing else;
    a finished one has every frame."""

    def animation(frames: int) -> tuple[plt.Figure, object]:
        fig, ax = plots.animation_axes(2)
        image = ax.imshow([[0.0, 1.0]], vmin=0, vmax=1)
        return fig, lambda i: [image.set_data([[i / frames, 1.0]]) or image]

    path = tmp_path / "a.gif"
    plots.save_gif(*animation(3), 3, path, fps=5)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
    before = path.read_bytes()

    def stopped(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"GIF89a half")
        raise KeyboardInterrupt

    monkeypatch.setattr(FuncAnimation, "save", stopped)
    with pytest.raises(KeyboardInterrupt):
        plots.save_gif(*animation(4), 4, path, fps=5)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.gif"]


@pytest.mark.parametrize(
    ("family", "cfg", "manifold"),
    [
        (VAE, VAEConfig(latent_dim=2, hidden=(8,)), True),
        (VAE, VAEConfig(latent_dim=3, hidden=(8,)), False),
        (HVAE, HVAEConfig(latent_dims=(2,), hidden=(8,)), True),
        (HVAE, HVAEConfig(latent_dims=(2,), hidden=(8,), prior="vamp", pseudo_inputs=3), False),
        (BinaryVAE, BinaryVAEConfig(latent_dim=2, hidden=(8,)), False),
    ],
    ids=["vae-z2", "vae-z3", "hvae-z2", "vampprior-z2", "bvae-z2"],
)
def test_the_manifold_is_drawn_for_a_2d_gaussian_prior_alone(
    family: type, cfg: object, manifold: bool
) -> None:
    """The figure of p(x|z) over a grid of N(0, I)'s quantiles needs z ~ N(0, I) in 2-D:
    not a VampPrior (a mixture), not Bernoulli latents."""
    assert figures.has_2d_gaussian_prior(family(cfg, SHAPE)) is manifold
