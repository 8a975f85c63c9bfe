"""The GAN's losses against their formulas, and Algorithm 1's step rhythm."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from genzoo.errors import GenzooError
from genzoo.models.gan import (
    EQUILIBRIUM_VALUE,
    GAN,
    GANConfig,
    discriminator_loss,
    generator_loss,
    hinge_discriminator_loss,
)

SHAPE = (1, 4, 4)


def tiny_gan(**overrides) -> GAN:
    torch.manual_seed(0)
    cfg = GANConfig(**{"noise_dim": 3, "gen_hidden": (8, 8), "disc_hidden": (8,), **overrides})
    return GAN(cfg, SHAPE)


def test_value_is_minus_log_4_when_d_is_one_half_everywhere() -> None:
    zeros = torch.zeros(5)  # logit 0 <=> D = 1/2
    torch.testing.assert_close(-discriminator_loss(zeros, zeros), torch.full((5,), -math.log(4)))
    model = tiny_gan()
    last = model.discriminator[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    terms = model.eval().evaluate_batch(torch.rand(6, *SHAPE))
    torch.testing.assert_close(terms["value"], torch.full((6,), EQUILIBRIUM_VALUE))
    torch.testing.assert_close(terms["d_real"], torch.full((6,), 0.5))


@pytest.mark.parametrize("kind", ["minimax", "nonsaturating"])
def test_generator_losses_have_the_gradients_of_their_formulas(kind: str) -> None:
    logits = torch.linspace(-8, 8, 17, requires_grad=True)
    generator_loss(logits, kind).sum().backward()
    d = torch.sigmoid(logits.detach())
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l);  d/dl -log sigmoid(l) = sigmoid(l) - 1
    expected = -d if kind == "minimax" else d - 1
    torch.testing.assert_close(logits.grad, expected)
    value = generator_loss(logits.detach(), kind)
    d64 = torch.sigmoid(logits.detach().double())  # the naive formula, accurate in float64
    formula = torch.log(1 - d64) if kind == "minimax" else -torch.log(d64)
    torch.testing.assert_close(value.double(), formula, rtol=1e-6, atol=1e-6)


def test_minimax_loss_saturates_where_nonsaturating_does_not() -> None:
    rejected = torch.tensor([-12.0], requires_grad=True)  # D(G(z)) ~ 6e-6: D wins easily
    grads = {}
    for kind in ("minimax", "nonsaturating"):
        (grad,) = torch.autograd.grad(generator_loss(rejected, kind).sum(), rejected)
        grads[kind] = grad.abs().item()
    assert grads["minimax"] < 1e-4 and grads["nonsaturating"] > 0.99


def test_saturated_discriminator_gives_finite_losses() -> None:
    extreme = torch.tensor([-200.0, 200.0])
    assert torch.isfinite(discriminator_loss(extreme, -extreme)).all()
    for kind in ("minimax", "nonsaturating"):
        assert torch.isfinite(generator_loss(extreme, kind)).all()


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_generator_steps_once_every_d_steps_discriminator_steps() -> None:
    model = tiny_gan(d_steps=3)
    optimizers = model.configure_optimizers(1e-2)
    x = torch.rand(8, *SHAPE)
    generator_moved = []
    for _ in range(6):
        generator, discriminator = snapshot(model.generator), snapshot(model.discriminator)
        stats = model.train_step(x, optimizers)
        generator_moved.append(changed(generator, model.generator))
        assert changed(discriminator, model.discriminator)
        assert ("g_loss" in stats) == generator_moved[-1]
    assert generator_moved == [False, False, True, False, False, True]
    assert model.sample(5).shape == (5, *SHAPE)


@pytest.mark.parametrize("conditional", [False, True])
def test_generator_step_computes_no_discriminator_gradient(conditional: bool) -> None:
    """G's backward passes through D but leaves D's gradients as D's own step left them,
    and every weight of D needs a gradient again afterwards."""
    model = tiny_gan(conditional=conditional, num_classes=3)
    opt_g, opt_d = model.configure_optimizers(1e-2)
    d_params = [p for group in opt_d.param_groups for p in group["params"]]
    after_d_step = []
    d_step = opt_d.step
    opt_d.step = lambda: (after_d_step.extend(p.grad.clone() for p in d_params), d_step())
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]) if conditional else None
    stats = model.train_step(torch.rand(8, *SHAPE), [opt_g, opt_d], labels)
    assert "g_loss" in stats
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    for param, grad in zip(d_params, after_d_step, strict=True):
        assert torch.equal(param.grad, grad)
        assert param.requires_grad


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 12)])
def test_conv_gan_shapes_and_its_step_rhythm(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = GAN(GANConfig(noise_dim=4, arch="conv", conv_width=4, d_steps=2), shape)
    x = torch.rand(6, *shape)
    assert model.logits(x).shape == (6,)
    samples = model.sample(5)
    assert samples.shape == (5, *shape) and samples.min() >= 0 and samples.max() <= 1
    optimizers = model.configure_optimizers(1e-2)
    steps = [model.train_step(x, optimizers) for _ in range(4)]
    assert ["g_loss" in s for s in steps] == [False, True, False, True]
    # Every parameter of both networks receives a gradient from its player's loss.
    fake = model.generate(model.prior().sample((6,)))
    generator_loss(model.logits(fake), "nonsaturating").mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())


def test_conv_gan_refuses_sides_not_divisible_by_4() -> None:
    with pytest.raises(GenzooError, match="sides divisible by 4"):
        GAN(GANConfig(arch="conv"), (1, 30, 30))


def test_label_smoothing_is_the_cross_entropy_against_one_minus_s() -> None:
    real = torch.linspace(-6, 6, 13, requires_grad=True)
    fake = torch.linspace(-3, 3, 13)
    s = 0.1
    loss = discriminator_loss(real, fake, smoothing=s)
    reference = F.binary_cross_entropy_with_logits(
        real, torch.full_like(real, 1 - s), reduction="none"
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake), reduction="none")
    torch.testing.assert_close(loss, reference)
    # D's optimum on a real image is D(x) = 1 - s, no longer 1
    optimum = torch.tensor([math.log((1 - s) / s)], requires_grad=True)
    discriminator_loss(optimum, torch.zeros(1), smoothing=s).sum().backward()
    assert abs(optimum.grad.item()) < 1e-6


def test_smoothed_discriminator_still_reports_the_unsmoothed_value() -> None:
    x = torch.rand(6, *SHAPE)
    losses = {}
    for s in (0.0, 0.2):
        model = tiny_gan(label_smoothing=s)
        torch.manual_seed(1)
        _, stats = model.loss(x)
        losses[s] = stats
    # same weights and noise: V(D, G) agrees, D's (smoothed) loss does not
    assert losses[0.2]["value"] == pytest.approx(losses[0.0]["value"], rel=1e-6)
    assert losses[0.0]["d_loss"] == pytest.approx(-losses[0.0]["value"], rel=1e-6)
    assert losses[0.2]["d_loss"] != pytest.approx(-losses[0.2]["value"], rel=1e-3)


def test_discriminator_dropout_acts_in_training_only() -> None:
    model = tiny_gan(d_dropout=0.5, disc_hidden=(8, 8))
    dropouts = [m for m in model.discriminator if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 2
    x = torch.rand(16, *SHAPE)
    model.train()
    assert not torch.equal(model.logits(x), model.logits(x))
    model.eval()
    assert torch.equal(model.logits(x), model.logits(x))


@pytest.mark.parametrize(("arch", "expected"), [("mlp", [0.3, 0.3]), ("conv", [])])
def test_unset_dropout_is_the_recipe_of_each_arch(arch: str, expected: list[float]) -> None:
    cfg = GANConfig(noise_dim=3, disc_hidden=(8, 8), arch=arch, conv_width=2)
    model = GAN(cfg, (1, 8, 8))
    assert [m.p for m in model.discriminator if isinstance(m, torch.nn.Dropout)] == expected
    explicit = GAN(dataclasses.replace(cfg, d_dropout=0.1), (1, 8, 8))
    assert [m.p for m in explicit.discriminator if isinstance(m, torch.nn.Dropout)] == [0.1] * 2


@pytest.mark.parametrize(
    ("arch", "given", "expected"),
    [
        ("mlp", None, "minimax"),
        ("conv", None, "nonsaturating"),
        ("mlp", "nonsaturating", "nonsaturating"),
        ("conv", "minimax", "minimax"),
    ],
)
def test_unset_generator_loss_is_the_measured_recipe_of_each_arch(
    arch: str, given: str | None, expected: str
) -> None:
    cfg = GANConfig(noise_dim=3, gen_hidden=(8,), disc_hidden=(8,), arch=arch, conv_width=2)
    model = GAN(dataclasses.replace(cfg, gen_loss=given), (1, 8, 8)).eval()
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(2)
    g_loss, _ = model.generator_objective(x)
    torch.manual_seed(2)
    fake_logits = model.logits(model.generate(model.noise(5)))
    assert g_loss.item() == pytest.approx(generator_loss(fake_logits, expected).mean().item())
    other = "nonsaturating" if expected == "minimax" else "minimax"
    assert g_loss.item() != pytest.approx(generator_loss(fake_logits, other).mean().item())


def test_hinge_losses_against_their_formulas() -> None:
    real = torch.tensor([-2.0, 0.5, 3.0], requires_grad=True)
    fake = torch.tensor([-3.0, -0.5, 2.0], requires_grad=True)
    loss = hinge_discriminator_loss(real, fake)
    torch.testing.assert_close(loss.detach(), torch.tensor([3.0 + 0.0, 0.5 + 0.5, 0.0 + 3.0]))
    loss.sum().backward()
    # Beyond its margin (l(x) >= 1, l(G(z)) <= -1) an example gives D no gradient.
    torch.testing.assert_close(real.grad, torch.tensor([-1.0, -1.0, 0.0]))
    torch.testing.assert_close(fake.grad, torch.tensor([0.0, 1.0, 1.0]))
    logits = torch.linspace(-3, 3, 7, requires_grad=True)
    generator_loss(logits, "hinge").sum().backward()
    torch.testing.assert_close(logits.grad, torch.full((7,), -1.0))


def test_hinge_gan_trains_on_the_hinge_loss_and_refuses_label_smoothing() -> None:
    model = tiny_gan(gen_loss="hinge")
    x = torch.rand(6, *SHAPE)
    torch.manual_seed(1)
    _, stats = model.loss(x)
    torch.manual_seed(1)
    fake = model.generate(model.prior().sample((6,)))
    expected = hinge_discriminator_loss(model.logits(x), model.logits(fake)).mean()
    assert stats["d_loss"] == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(GenzooError, match="label-smoothing"):
        tiny_gan(gen_loss="hinge", label_smoothing=0.1)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_spectral_norm_holds_every_layer_of_d_at_singular_value_one(arch: str) -> None:
    torch.manual_seed(0)
    shape = (1, 8, 8)
    cfg = GANConfig(noise_dim=3, disc_hidden=(16, 8), arch=arch, conv_width=4, d_norm="spectral")
    model = GAN(cfg, shape).train()
    x = torch.rand(4, *shape)
    for _ in range(30):  # each training-mode pass is one power iteration per layer
        model.logits(x)
    layers = [m for m in model.discriminator if hasattr(m, "parametrizations")]
    assert len(layers) == 3  # both hidden layers and the head
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-3)
        original = layer.parametrizations.weight.original.detach().flatten(1)
        assert torch.linalg.matrix_norm(original, ord=2).item() != pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_batch_norm_and_dropout_in_d_follow_every_hidden_layer_but_bn_the_first(
    arch: str,
) -> None:
    cfg = GANConfig(noise_dim=3, disc_hidden=(8, 8), arch=arch, conv_width=2)
    model = GAN(dataclasses.replace(cfg, d_norm="batch", d_dropout=0.2), (1, 8, 8))
    kinds = [type(m).__name__ for m in model.discriminator if not isinstance(m, torch.nn.Flatten)]
    hidden = [
        k for k in kinds if k in ("Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "Dropout")
    ]
    bn = "BatchNorm2d" if arch == "conv" else "BatchNorm1d"
    layer = "Conv2d" if arch == "conv" else "Linear"
    assert hidden == [layer, "Dropout", layer, bn, "Dropout", "Linear"]
