"""Tests for the Flax model zoo: shapes, parameter counts, padding, normalisation, registry."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcert.models import MLP, MODELS, DMLarge, DMMedium, DMSmall, ResNetSmall, get_model

MNIST = (2, 28, 28, 1)
CIFAR = (2, 32, 32, 3)
TINY = (2, 64, 64, 3)

EXPECTED_NAMES = {
    "dm_small",
    "dm_medium",
    "dm_large",
    "small",
    "small_star",
    "medium",
    "large",
    "large_star",
    "cnn_4c3f",
    "cnn_6c2f",
    "cnn_8c2f",
    "mlp",
    "resnet_small",
}

# (name, input shape, num_classes); 8C2F is the thesis' Tiny ImageNet network.
CASES = [
    (name, shape, 10) for name in sorted(EXPECTED_NAMES - {"cnn_8c2f"}) for shape in (MNIST, CIFAR)
]
CASES += [("cnn_8c2f", TINY, 200)]


def _image(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), shape)


def _n_params(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _abstract_variables(model, shape: tuple[int, ...]):
    # eval_shape traces model.init without running it: shapes only, no compiles.
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))


def _param_count(model, shape: tuple[int, ...]) -> int:
    return _n_params(_abstract_variables(model, shape)["params"])


def _variables(model, shape: tuple[int, ...], seed: int = 0):
    """Variables with ``model.init``'s structure, filled with NumPy random numbers.

    On CPU ``model.init`` spends seconds compiling an initialiser per kernel shape; this keeps
    the file fast while still running the forward passes on real numbers.
    """
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":  # variance 1 / fan_in, like Flax's lecun_normal
            bound = np.sqrt(3.0 / np.prod(leaf.shape[:-1]))
            value = rng.uniform(-bound, bound, leaf.shape)
        elif name in ("scale", "var"):  # BatchNorm scale and running variance
            value = rng.uniform(0.5, 1.5, leaf.shape)
        else:  # biases, BatchNorm shift and running mean
            value = rng.uniform(-0.1, 0.1, leaf.shape)
        return value.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, _abstract_variables(model, shape))


def _conv(c_in: int, c_out: int, k: int) -> int:
    return k * k * c_in * c_out + c_out


def _dense(d_in: int, d_out: int) -> int:
    return d_in * d_out + d_out


def _intermediates(model, variables, x, abstract: bool = False) -> dict:
    """Outputs of each direct submodule (``Conv_0``, ``Dense_0``, ...), before the ReLU.

    ``abstract=True`` gives only their shapes (``jax.eval_shape``: nothing is compiled).
    """

    def run(variables, x):
        _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return {k: v["__call__"][0] for k, v in state["intermediates"].items() if k != "__call__"}

    return jax.eval_shape(run, variables, x) if abstract else jax.jit(run)(variables, x)


def test_registry_names():
    assert set(MODELS) == EXPECTED_NAMES


def test_get_model_unknown_name_lists_known():
    with pytest.raises(ValueError, match="dm_small"):
        get_model("dm_tiny")


def test_get_model_passes_kwargs():
    model = get_model("mlp", num_classes=3, features=(7,))
    assert isinstance(model, MLP)
    assert model.num_classes == 3 and model.features == (7,)


@pytest.mark.parametrize(("name", "shape", "num_classes"), CASES)
def test_forward_shape_and_finite(name: str, shape: tuple[int, ...], num_classes: int):
    model = get_model(name, num_classes=num_classes)
    x = _image(shape)
    variables = _variables(model, shape)
    # Shapes on every case (abstract, free); numbers on all but MNIST to keep the file fast.
    assert jax.eval_shape(model.apply, variables, x).shape == (shape[0], num_classes)
    if shape != MNIST:
        # One XLA program per model compiles faster on CPU than op-by-op dispatch.
        logits = jax.jit(model.apply)(variables, x)
        assert logits.shape == (shape[0], num_classes)
        assert bool(jnp.all(jnp.isfinite(logits)))


def test_flax_init_runs():
    # The real initialiser on one small model; the other tests use _variables to stay fast.
    model = get_model("mlp", features=(16,))
    x = _image(MNIST)
    variables = jax.jit(model.init)(jax.random.key(1), x)
    abstract = _abstract_variables(model, MNIST)
    assert jax.tree.structure(variables) == jax.tree.structure(abstract)
    logits = jax.jit(model.apply)(variables, x)
    assert logits.shape == (2, 10)
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_dm_small_layers_and_params():
    model = DMSmall()
    x = _image(MNIST)
    variables = _abstract_variables(model, x.shape)
    inter = _intermediates(model, variables, x, abstract=True)
    assert inter["Conv_0"].shape == (2, 13, 13, 16)
    assert inter["Conv_1"].shape == (2, 10, 10, 32)
    assert variables["params"]["Dense_0"]["kernel"].shape == (3200, 100)
    expected = _conv(1, 16, 4) + _conv(16, 32, 4) + _dense(3200, 100) + _dense(100, 10)
    assert _n_params(variables["params"]) == expected
    # CIFAR: 32 -> 15 -> 12.
    assert _param_count(model, CIFAR) == (
        _conv(3, 16, 4) + _conv(16, 32, 4) + _dense(12 * 12 * 32, 100) + _dense(100, 10)
    )


def test_dm_medium_layers_and_params():
    model = DMMedium()
    x = _image(MNIST)
    variables = _abstract_variables(model, x.shape)
    inter = _intermediates(model, variables, x, abstract=True)
    assert [inter[f"Conv_{i}"].shape[1:] for i in range(4)] == [
        (26, 26, 32),
        (12, 12, 32),
        (10, 10, 64),
        (4, 4, 64),
    ]
    expected = (
        _conv(1, 32, 3)
        + _conv(32, 32, 4)
        + _conv(32, 64, 3)
        + _conv(64, 64, 4)
        + _dense(4 * 4 * 64, 512)
        + _dense(512, 512)
        + _dense(512, 10)
    )
    assert _n_params(variables["params"]) == expected


def test_dm_large_layers_and_params():
    model = DMLarge()
    x = _image(CIFAR)
    variables = _abstract_variables(model, x.shape)
    inter = _intermediates(model, variables, x, abstract=True)
    assert [inter[f"Conv_{i}"].shape[1:3] for i in range(5)] == [(32, 32)] * 2 + [(16, 16)] * 3
    assert variables["params"]["Dense_0"]["kernel"].shape == (16 * 16 * 128, 512)
    expected = (
        _conv(3, 64, 3)
        + _conv(64, 64, 3)
        + _conv(64, 128, 3)
        + 2 * _conv(128, 128, 3)
        + _dense(16 * 16 * 128, 512)
        + _dense(512, 10)
    )
    assert _n_params(variables["params"]) == expected
    assert _param_count(model, MNIST) - expected == (
        _conv(1, 64, 3) - _conv(3, 64, 3) + (14 * 14 - 16 * 16) * 128 * 512
    )


def test_dm_large_stride2_conv_pads_symmetrically():
    model = DMLarge()
    x = _image(CIFAR)
    variables = _variables(model, x.shape)
    inter = _intermediates(model, variables, x)
    conv_in = jax.nn.relu(inter["Conv_1"])
    params = variables["params"]["Conv_2"]

    def reference(padding):
        out = jax.lax.conv_general_dilated(
            conv_in,
            params["kernel"],
            window_strides=(2, 2),
            padding=padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )
        return out + params["bias"]

    got = inter["Conv_2"]
    np.testing.assert_allclose(got, reference(((1, 1), (1, 1))), rtol=1e-4, atol=1e-4)
    # "SAME" pads this conv (0, 1): a different function, so the check above can tell them apart.
    assert not np.allclose(got, reference("SAME"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "shape", "num_classes", "params"),
    [
        # Table 3.2 of the thesis.
        ("cnn_4c3f", MNIST, 10, 1_974_762),
        ("cnn_4c3f", CIFAR, 10, 2_466_858),
        ("cnn_6c2f", CIFAR, 10, 2_250_378),
        ("cnn_8c2f", TINY, 200, 4_342_984),
        # Medium is 4C3F once both pad by 1 (see jaxcert/models/thesis.py).
        ("medium", CIFAR, 10, 2_466_858),
    ],
)
def test_thesis_param_counts(name: str, shape: tuple[int, ...], num_classes: int, params: int):
    assert _param_count(get_model(name, num_classes=num_classes), shape) == params


@pytest.mark.parametrize(
    ("name", "flatten"),
    [
        ("small", 15 * 15 * 32),  # 7200, the authors' hard-coded size
        ("small_star", 8 * 8 * 32),
        ("large", 16 * 16 * 128),
        ("large_star", 16 * 16 * 128),
    ],
)
def test_thesis_flatten_sizes_on_cifar(name: str, flatten: int):
    variables = jax.eval_shape(get_model(name).init, jax.random.key(0), jnp.zeros(CIFAR))
    assert variables["params"]["Dense_0"]["kernel"].shape[0] == flatten


@pytest.mark.parametrize("name", ["dm_small", "mlp"])
def test_normalisation_inside_model(name: str):
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    plain = get_model(name)
    normed = get_model(name, mean=mean, std=std)
    x = _image(CIFAR)
    variables = _variables(plain, x.shape)
    x_normed = (x - jnp.asarray(mean)) / jnp.asarray(std)
    np.testing.assert_allclose(
        jax.jit(normed.apply)(variables, x),
        jax.jit(plain.apply)(variables, x_normed),
        rtol=1e-5,
        atol=1e-5,
    )


def test_normalisation_rejects_bad_arguments():
    x = _image(CIFAR)
    with pytest.raises(ValueError, match="both mean and std"):
        DMSmall(mean=(0.5, 0.5, 0.5)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="3 channels"):
        DMSmall(mean=(0.5,), std=(0.2,)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="positive"):
        DMSmall(mean=(0.5,) * 3, std=(0.2, 0.0, 0.2)).init(jax.random.key(0), x)


def test_convnet_rejects_flat_input():
    with pytest.raises(ValueError, match="NHWC"):
        DMSmall().init(jax.random.key(0), jnp.zeros((2, 784)))


def test_mlp_2x100():
    variables = jax.eval_shape(MLP().init, jax.random.key(0), jnp.zeros(MNIST))
    assert _n_params(variables["params"]) == _dense(784, 100) + _dense(100, 100) + _dense(100, 10)


def test_resnet_small_batch_norm_modes():
    model = ResNetSmall()
    x = _image(CIFAR)
    variables = _variables(model, x.shape)
    assert 10_000 < _n_params(variables["params"]) < 100_000
    # Train mode uses batch statistics and updates the running averages.
    train_apply = jax.jit(partial(model.apply, train=True, mutable=["batch_stats"]))
    logits, updates = train_apply(variables, x)
    assert logits.shape == (2, 10)
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    # Eval mode is a fixed function of the input: no mutable state needed, deterministic.
    eval_vars = {"params": variables["params"], **updates}
    eval_apply = jax.jit(model.apply)
    out1 = eval_apply(eval_vars, x)
    out2 = eval_apply(eval_vars, x[:1])
    np.testing.assert_allclose(out1[:1], out2, rtol=1e-5, atol=1e-5)
