"""Properties of the Real NVP flow checked against references: inverses, log-determinants
against autograd Jacobians, densities known in closed form, and the bits/dim protocol."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from genzoo.config import check_fields
from genzoo.errors import GenzooError
from genzoo.models.realnvp import (
    ActNorm,
    AffineCoupling,
    LogitTransform,
    RealNVP,
    RealNVPConfig,
    Squeeze,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    coupling_net,
)

FLOWS = {
    "conv-multiscale": (RealNVPConfig(n_scales=2, n_couplings=2, width=8, depth=1), (2, 4, 4)),
    "conv-single-scale": (
        RealNVPConfig(n_scales=2, n_couplings=2, width=8, depth=1, multiscale=False),
        (1, 4, 4),
    ),
    "mlp": (RealNVPConfig(coupling="mlp", n_couplings=3, width=8, depth=1), (1, 4, 4)),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: extra threads only add contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Random non-zero parameters: at their zero init the couplings are the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))


def skip_actnorm_init(model: torch.nn.Module) -> None:
    """Mark every actnorm initialised, so the flow is a fixed map from its first call: at
    zero parameters an actnorm is the identity."""
    for layer in model.modules():
        if isinstance(layer, ActNorm):
            layer.initialized.fill_(True)
            layer.ready = True


def tiny_flow(name: str, seed: int = 0, random: bool = True) -> RealNVP:
    torch.manual_seed(seed)
    cfg, shape = FLOWS[name]
    model = RealNVP(cfg, shape).double()
    skip_actnorm_init(model)
    if random:
        perturb(model, seed)
    return model


def unit_images(n: int, shape, seed: int = 1) -> torch.Tensor:
    """Continuous images in (0.02, 0.98), float64."""
    g = torch.Generator().manual_seed(seed)
    return 0.02 + 0.96 * torch.rand(n, *shape, generator=g, dtype=torch.float64)


def grey_images(n: int, shape, seed: int = 1) -> torch.Tensor:
    """Grey levels x_int / 255, with black and white pixels included, float64."""
    g = torch.Generator().manual_seed(seed)
    x_int = torch.randint(0, 256, (n, *shape), generator=g).double()
    x_int.view(n, -1)[:, :2] = torch.tensor([0.0, 255.0])
    return x_int / 255


def make_layer(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A layer with random parameters, in float64, and a batch of its inputs."""
    torch.manual_seed(0)
    if name.startswith("checkerboard"):
        parity = int(name.endswith("odd"))
        layer = AffineCoupling(checkerboard_mask((2, 4, 4), parity), coupling_net(True, 2, 8, 1))
        shape = (2, 4, 4)
    elif name.startswith("channel"):
        parity = int(name.endswith("odd"))
        layer = AffineCoupling(channel_mask((4, 2, 2), parity), coupling_net(True, 4, 8, 1))
        shape = (4, 2, 2)
    elif name == "mlp":
        layer, shape = AffineCoupling(alternating_mask(6, 1), coupling_net(False, 6, 8, 2)), (6,)
    elif name == "squeeze":
        layer, shape = Squeeze(), (2, 4, 4)
    elif name.startswith("actnorm"):
        shape = (2, 3, 3) if name == "actnorm" else (6,)
        layer = ActNorm(shape)
        skip_actnorm_init(layer)
    else:
        layer, shape = LogitTransform(0.05), (1, 3, 3)
    layer = layer.double()
    perturb(layer)
    return layer, unit_images(3, shape)


def autograd_log_det(f, x: torch.Tensor) -> torch.Tensor:
    """log |det df/dx| for each example of batch x, from the full Jacobian: (B,)."""
    out = []
    for xb in x:
        jac = torch.autograd.functional.jacobian(
            lambda v, xb=xb: f(v.view(1, *xb.shape)).flatten(), xb.flatten()
        )  # (D, D)
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


LAYERS = [
    "checkerboard",
    "checkerboard-odd",
    "channel",
    "channel-odd",
    "mlp",
    "squeeze",
    "logit",
    "actnorm",
    "actnorm-flat",
]


@pytest.mark.parametrize("name", LAYERS)
def test_layer_inverse_and_log_det_match_autograd(name: str) -> None:
    layer, x = make_layer(name)
    with torch.no_grad():
        y, log_det = layer(x)
        # Not the identity, so the checks below test something.
        assert y.shape != x.shape or (y - x).abs().max() > 1e-2
        torch.testing.assert_close(layer.inverse(y), x)
    torch.testing.assert_close(log_det, autograd_log_det(lambda v: layer(v)[0], x))


@pytest.mark.parametrize("shape", [(3, 4, 4), (5,)])
def test_actnorm_standardises_its_first_batch_and_keeps_that_map(shape) -> None:
    layer = ActNorm(shape)
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 2.5 * torch.randn(64, *shape, generator=g, dtype=torch.float64)
    layer = layer.double()
    y, log_det = layer(x)
    dims = [0, *range(2, x.dim())]
    torch.testing.assert_close(y.mean(dims), torch.zeros(shape[0], dtype=torch.float64))
    # Up to the 1e-6 that keeps constant channels finite:
    std = y.std(dims, correction=0)
    torch.testing.assert_close(std, torch.ones_like(std), rtol=0, atol=1e-5)
    # log |det| = -sum log std over every coordinate.
    expected = -torch.log(x.std(dims, correction=0)).sum() * math.prod(shape[1:])
    torch.testing.assert_close(log_det, expected.expand(64), rtol=1e-5, atol=0)
    # Later batches, and a copy loaded from the state dict, reuse the same map.
    other = ActNorm(shape).double()
    other.load_state_dict(layer.state_dict())
    x2 = 10 + torch.randn(8, *shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(layer(x2)[0], (x2 - layer.loc) / layer.log_scale.exp())
    torch.testing.assert_close(other(x2)[0], layer(x2)[0])


@pytest.mark.parametrize("name", ["checkerboard", "channel-odd", "mlp"])
def test_couplings_pass_the_masked_half_unchanged(name: str) -> None:
    layer, x = make_layer(name)
    with torch.no_grad():
        y, _ = layer(x)
    torch.testing.assert_close(y * layer.mask, x * layer.mask)
    free = (1 - layer.mask).expand_as(x).bool()
    assert (y - x)[free].abs().min() > 0  # and change every other entry


@pytest.mark.parametrize("name", list(FLOWS))
def test_flow_inverse_and_log_det_match_autograd(name: str) -> None:
    model = tiny_flow(name)
    y = unit_images(3, model.image_shape)
    with torch.no_grad():
        z, log_det = model.transform(y)
        assert z.shape == (3, model.data_dim)
        torch.testing.assert_close(model.inverse(z), y)
    torch.testing.assert_close(log_det, autograd_log_det(lambda v: model.transform(v)[0], y))


@pytest.mark.parametrize("name", list(FLOWS))
def test_encode_decode_round_trip_to_the_bin_centres(name: str) -> None:
    model = tiny_flow(name)
    x = grey_images(4, model.image_shape)
    torch.testing.assert_close(model.decode(model.encode(x)), (255 * x + 0.5) / 256)


def logit_normal_log_density(y: torch.Tensor, alpha: float) -> torch.Tensor:
    """log density of y when s = logit(alpha + (1 - 2 alpha) y) ~ N(0, I), by hand: (B,)."""
    p = alpha + (1 - 2 * alpha) * y
    s = torch.log(p / (1 - p))
    log_normal = -0.5 * s**2 - 0.5 * math.log(2 * math.pi)
    log_jacobian = math.log(1 - 2 * alpha) - torch.log(p * (1 - p))
    return (log_normal + log_jacobian).flatten(1).sum(1)


@pytest.mark.parametrize("name", list(FLOWS))
def test_identity_couplings_give_the_gaussian_of_the_logit(name: str) -> None:
    model = tiny_flow(name, random=False)  # zero-initialised couplings: z = logit transform
    y = unit_images(5, model.image_shape)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(y), logit_normal_log_density(y, 0.05))


def test_known_affine_couplings_on_2d_data_give_their_gaussian() -> None:
    """Two couplings set to z_d = a_d s_d + b_d (s = logit y) make s ~ N(-b/a, 1/a^2)."""
    cfg = RealNVPConfig(coupling="mlp", n_couplings=2, width=4, depth=1, alpha=0.0)
    torch.manual_seed(0)
    model = RealNVP(cfg, (1, 1, 2)).double()
    skip_actnorm_init(model)  # identities
    log_a = torch.tensor([0.7, -0.4], dtype=torch.float64)
    b = torch.tensor([1.5, -0.8], dtype=torch.float64)
    with torch.no_grad():
        for coupling in model.scales[0][1::2]:  # (flatten, coupling, actnorm, coupling, ...)
            # The last layer's weights are zero, so (raw, t) is its bias whatever the input;
            # s = scale * tanh(raw) with scale = 1 on the coordinate the coupling transforms.
            coupling.net[-1].bias.copy_(torch.cat([torch.atanh(log_a), b]))
    mu, sigma = -b / log_a.exp(), 1 / log_a.exp()

    y = unit_images(6, (1, 1, 2))
    s = torch.logit(y).flatten(1)  # (B, 2)
    expected = (Normal(mu, sigma).log_prob(s) - torch.log(y * (1 - y)).flatten(1)).sum(1)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(y), expected)

    # Sampling inverts the same map: logit(samples) has that mean and standard deviation.
    torch.manual_seed(1)
    n = 20000
    s_samples = torch.logit(model.sample(n)).flatten(1)  # (n, 2)
    assert ((s_samples.mean(0) - mu).abs() < 5 * sigma / math.sqrt(n)).all()
    assert ((s_samples.std(0) / sigma - 1).abs() < 5 / math.sqrt(2 * n)).all()


def test_bits_per_dim_follow_the_protocol_on_a_known_density() -> None:
    model = tiny_flow("conv-multiscale", random=False)
    x = grey_images(6, model.image_shape)
    d = model.data_dim
    torch.manual_seed(3)
    terms = model.evaluate_batch(x)
    torch.manual_seed(3)  # the same dequantization noise, drawn by hand
    y = (torch.round(255 * x) + torch.rand_like(x)) / 256
    log_p = logit_normal_log_density(y, 0.05)
    torch.testing.assert_close(terms["nll"], -log_p + d * math.log(256))
    torch.testing.assert_close(terms["bpd"], (-log_p / d + math.log(256)) / math.log(2))
    assert not torch.equal(model.evaluate_batch(x)["nll"], terms["nll"])  # fresh noise


def test_dequantized_nll_bounds_the_exact_discrete_nll() -> None:
    """With identity couplings the pixels are independent and P(x_int) is a difference of
    normal CDFs; E_u[nll] >= -log P(x_int) (Jensen), and tight for 1/256-wide bins."""
    model = tiny_flow("conv-single-scale", random=False)
    x = grey_images(4, model.image_shape)
    alpha, x_int = 0.05, torch.round(255 * x)
    cdf = lambda y: Normal(0.0, 1.0).cdf(torch.logit(alpha + (1 - 2 * alpha) * y))  # noqa: E731
    exact = -torch.log(cdf((x_int + 1) / 256) - cdf(x_int / 256)).flatten(1).sum(1)  # (B,)

    repeats = 500
    torch.manual_seed(0)
    nll = model.evaluate_batch(x.repeat(repeats, 1, 1, 1))["nll"].view(repeats, -1)  # (R, B)
    mean, se = nll.mean(0), nll.std(0) / math.sqrt(repeats)
    assert (mean > exact - 4 * se).all(), (mean, exact, se)
    assert (mean < exact + 4 * se + 0.02).all(), (mean, exact, se)


def structured_batch(n: int = 16, shape=(1, 4, 4), seed: int = 0) -> torch.Tensor:
    """A bright bar on a dark background plus a little noise, as grey levels, float32."""
    g = torch.Generator().manual_seed(seed)
    x_int = torch.full((n, *shape), 20.0)
    x_int[..., 1, :] = 230.0
    x_int += torch.randint(-8, 9, x_int.shape, generator=g)
    return x_int.clamp(0, 255) / 255


@pytest.mark.parametrize("coupling", ["conv", "mlp"])
def test_train_step_lowers_the_loss(coupling: str) -> None:
    torch.manual_seed(0)
    cfg = RealNVPConfig(coupling=coupling, n_scales=2, n_couplings=2, width=16, depth=1)
    model = RealNVP(cfg, (1, 4, 4))
    x = structured_batch()
    optimizers = model.configure_optimizers(1e-2)

    def evaluate() -> float:
        torch.manual_seed(123)  # the same dequantization noise before and after
        return model.evaluate_batch(x)["bpd"].mean().item()

    before = evaluate()
    for _ in range(20):
        stats = model.train_step(x, optimizers)
    assert {"loss", "bpd", "nll"} <= stats.keys()
    assert stats["loss"] == stats["bpd"]
    assert stats["nll"] == pytest.approx(stats["bpd"] * 16 * math.log(2), rel=1e-5)
    # The same dequantization noise before and after: the drop is the training alone.
    assert evaluate() < before - 0.25, (before, evaluate())


@pytest.mark.parametrize("name", list(FLOWS))
def test_samples_are_images_and_temperature_zero_is_deterministic(name: str) -> None:
    model = tiny_flow(name)
    samples = model.sample(7)
    assert samples.shape == (7, *model.image_shape)
    assert ((samples >= 0) & (samples <= 1)).all()
    assert not torch.equal(samples, model.sample(7))
    cold = model.sample(3, temperature=0.0)
    torch.testing.assert_close(cold, model.sample(3, temperature=0.0), rtol=0, atol=0)
    torch.testing.assert_close(cold, model.decode(torch.zeros(3, model.data_dim)))
    # At the identity init z = 0 is logit(alpha + (1 - 2 alpha) y) = 0, i.e. y = 1/2.
    fresh = tiny_flow(name, random=False).sample(2, temperature=0.0)
    torch.testing.assert_close(fresh, torch.full_like(fresh, 0.5))


def test_bad_shapes_and_inputs_fail_loudly() -> None:
    with pytest.raises(GenzooError, match="divisible by 4"):
        RealNVP(RealNVPConfig(n_scales=3), (1, 6, 6))
    with pytest.raises(GenzooError, match=r"--alpha must be below 0\.5"):
        check_fields(RealNVPConfig(alpha=0.5))
    model = tiny_flow("mlp")
    with pytest.raises(GenzooError, match="1/255"):
        model.evaluate_batch(unit_images(2, model.image_shape))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=-1.0)
