"""jaxcert side by side with auto_LiRPA: same models, weights and batch; bounds and times.

auto_LiRPA is not a jaxcert dependency; install it into the benchmark's environment:

    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    pip install --no-deps auto-lirpa==0.3 && pip install appdirs pyyaml packaging tqdm
    python -m benchmarks.lirpa [--quick] [--write]

auto_LiRPA 0.3 pins torch<1.13; under torch 2.13 and numpy 2 it needs four import-time
shims, applied here (never in site-packages): ``numpy.lib.arraysetops`` is gone,
``torch.onnx.symbolic_helper._set_opset_version`` moved, ``torch._C.Node.__getitem__``
was dropped, and the opset >= 11 symbolic functions must be imported for ``Pad`` to
export. If auto_LiRPA cannot be imported, the script says why and exits 0.

For each model (Flax weights converted: HWIO -> OIHW, NHWC -> NCHW, the first dense
layer's rows permuted from (h, w, c) to (c, h, w) flatten order) it compares the lower
bounds of the margin specification from IBP, CROWN-IBP and CROWN, and times bound-only
calls and full training steps (loss, gradient, Adam update) on both sides.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import platform
import statistics
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcert
from benchmarks.report import write_section
from benchmarks.steps import method_loss
from jaxcert.models import get_model
from jaxcert.xla_options import jit as xla_jit

_LIRPA_METHOD = {"ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "CROWN"}


def load_auto_lirpa():
    """``(torch, auto_LiRPA)`` with the shims applied, or ``(None, reason)``."""
    try:
        import numpy

        if "numpy.lib.arraysetops" not in sys.modules:
            shim = types.ModuleType("numpy.lib.arraysetops")
            shim.__getattr__ = lambda name: getattr(numpy, name)
            sys.modules["numpy.lib.arraysetops"] = shim
        import torch
        import torch.onnx.symbolic_helper as helper

        if not hasattr(helper, "_set_opset_version"):
            from torch.onnx._internal.torchscript_exporter import _globals

            def _set_opset_version(version: int) -> None:
                _globals.GLOBALS.export_onnx_opset_version = version

            helper._set_opset_version = _set_opset_version
        if not hasattr(torch._C.Node, "__getitem__"):
            torch._C.Node.__getitem__ = lambda node, k: getattr(node, node.kindOf(k))(k)
        for version in range(9, 21):
            for prefix in ("torch.onnx._internal.torchscript_exporter", "torch.onnx"):
                try:
                    importlib.import_module(f"{prefix}.symbolic_opset{version}")
                    break
                except ImportError:
                    continue
        import auto_LiRPA
    except Exception as e:  # noqa: BLE001 - any import failure is reported, not raised
        return None, f"{type(e).__name__}: {e}"
    return torch, auto_LiRPA


def to_torch(torch, model, params, in_shape):
    """A ``torch.nn.Sequential`` computing the same function as the Flax ConvNet."""
    nn = torch.nn
    layers, h, w, c = [], in_shape[0], in_shape[1], in_shape[2]
    for i, spec in enumerate(model.convs):
        pad = 0 if spec.padding == "VALID" else int(spec.padding)
        conv = nn.Conv2d(c, spec.features, spec.kernel, stride=spec.stride, padding=pad)
        kernel = np.asarray(params[f"Conv_{i}"]["kernel"])  # HWIO
        conv.weight.data = torch.tensor(kernel.transpose(3, 2, 0, 1).copy())
        conv.bias.data = torch.tensor(np.asarray(params[f"Conv_{i}"]["bias"]))
        layers += [conv, nn.ReLU()]
        h = (h + 2 * pad - spec.kernel) // spec.stride + 1
        w = (w + 2 * pad - spec.kernel) // spec.stride + 1
        c = spec.features
    layers.append(nn.Flatten())
    widths = [*model.hidden, model.num_classes]
    n_in = h * w * c
    for i, width in enumerate(widths):
        dense = nn.Linear(n_in, width)
        kernel = np.asarray(params[f"Dense_{i}"]["kernel"])  # (in, out)
        if i == 0:  # rows in Flax's (h, w, c) flatten order -> torch's (c, h, w)
            kernel = kernel.reshape(h, w, c, width).transpose(2, 0, 1, 3).reshape(n_in, width)
        dense.weight.data = torch.tensor(kernel.T.copy())
        dense.bias.data = torch.tensor(np.asarray(params[f"Dense_{i}"]["bias"]))
        layers.append(dense)
        if i < len(widths) - 1:
            layers.append(nn.ReLU())
        n_in = width
    return nn.Sequential(*layers)


def _median(fn, min_time: float = 1.0, min_reps: int = 3, max_reps: int = 20) -> float:
    fn()  # warm-up (and compile)
    times: list[float] = []
    while len(times) < min_reps or (sum(times) < min_time and len(times) < max_reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _jax_step(name, apply_fn, num_classes, eps):
    loss_fn = method_loss(name, apply_fn, num_classes)
    opt = optax.adam(1e-3)
    hp = {"eps": jnp.float32(eps), "kappa": jnp.float32(0.5), "beta": jnp.float32(1.0)}
    hp["lam"] = jnp.float32(0.0)

    @xla_jit
    def step(params, opt_state, x, y):
        grads = jax.grad(lambda p: loss_fn(p, x, y, hp, jax.random.PRNGKey(0))[0])(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step, opt


def _torch_step(torch, bounded, net, method, x, y, C, eps, auto_lirpa):
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=None, x_U=None)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    num_classes = C.shape[-1]

    def step():
        opt.zero_grad()
        logits = bounded(x)
        natural = torch.nn.functional.cross_entropy(logits, y)
        if method == "natural":
            loss = natural
        else:
            bx = auto_lirpa.BoundedTensor(x, ptb)
            lower, _ = bounded.compute_bounds(
                x=(bx,), C=C, method=_LIRPA_METHOD[method], bound_upper=False
            )
            # Worst-case logits: -lower at the other classes, 0 at the label.
            worst = torch.zeros(len(y), num_classes)
            others = (
                torch.arange(num_classes - 1)[None]
                + (torch.arange(num_classes - 1)[None] >= y[:, None]).long()
            )
            worst = worst.scatter(1, others, -lower)
            robust = torch.nn.functional.cross_entropy(worst, y)
            loss = 0.5 * natural + 0.5 * robust
        loss.backward()
        opt.step()

    return step


def _fused_module(torch, auto_lirpa, net, x, y):
    """auto_LiRPA's loss-fusion module: ``sum_j exp(z_j - z_y)`` with the max shift."""
    from auto_LiRPA.wrapper import CrossEntropyWrapper

    module = auto_lirpa.BoundedModule(
        CrossEntropyWrapper(net), (x[:1], y[:1]), bound_opts={"loss_fusion": True}
    )
    exp_node = next(m for m in module.modules() if type(m).__name__ == "BoundExp")

    def fused_upper(bx, y):
        """Per-example upper bounds of the cross-entropy (CROWN-IBP, loss fusion)."""
        _, upper = module.compute_bounds(
            x=(bx, y), IBP=True, C=None, method="backward", bound_lower=False
        )
        return (torch.log(upper) + exp_node.max_input).reshape(-1)

    return module, fused_upper


def _torch_fused_step(torch, net, x, y, eps, auto_lirpa):
    module, fused_upper = _fused_module(torch, auto_lirpa, net, x, y)
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), eps=eps)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)  # the module shares them

    def step():
        opt.zero_grad()
        natural = torch.nn.functional.cross_entropy(net(x), y)
        robust = torch.mean(fused_upper(auto_lirpa.BoundedTensor(x, ptb), y))
        (0.5 * natural + 0.5 * robust).backward()
        opt.step()

    return step


def compare(torch, auto_lirpa, name, in_shape, batch, full_batch, eps) -> list[dict]:
    model = get_model(name)
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.uniform(kx, (batch, *in_shape))
    y = jax.random.randint(ky, (batch,), 0, 10)
    params = model.init(kp, x[:1])["params"]
    net = to_torch(torch, model, params, in_shape)
    x_t = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
    y_t = torch.tensor(np.asarray(y), dtype=torch.long)
    C = jaxcert.margin_spec(y, 10)
    C_t = torch.tensor(np.asarray(C))
    bounded = auto_lirpa.BoundedModule(net, torch.zeros(1, *x_t.shape[1:]))

    def apply_fn(p, z):
        return model.apply({"params": p}, z)

    np.testing.assert_allclose(  # the converted network is the same function
        bounded(x_t).detach().numpy(), np.asarray(apply_fn(params, x)), rtol=1e-4, atol=1e-4
    )
    rows = []
    for method in ("ibp", "crown-ibp", "crown"):
        n = full_batch if method == "crown" else batch
        s = jaxcert.LinfBall(x[:n], eps)
        ours = xla_jit(
            lambda p, s, C, m=method: (
                jaxcert.bound(lambda z: apply_fn(p, z), s, m, spec=C, bound_upper=False).lower
            )
        )
        ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), eps=eps)
        bx = auto_lirpa.BoundedTensor(x_t[:n], ptb)

        def theirs(m=method, bx=bx, n=n):
            with torch.no_grad():
                return bounded.compute_bounds(
                    x=(bx,), C=C_t[:n], method=_LIRPA_METHOD[m], bound_upper=False
                )[0]

        a = np.asarray(ours(params, s, C[:n]))
        b = theirs().numpy()
        rel = float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
        t_ours = _median(lambda f=ours, s=s, n=n: jax.block_until_ready(f(params, s, C[:n])))
        t_theirs = _median(theirs)
        rows.append(
            {
                "model": name,
                "what": f"bound {method}",
                "batch": n,
                "jaxcert_ms": 1e3 * t_ours,
                "lirpa_ms": 1e3 * t_theirs,
                "max_rel_diff": rel,
            }
        )
        print(rows[-1], flush=True)
    rows.append(_compare_fused(torch, auto_lirpa, name, net, apply_fn, params, x, y, eps))
    for method in ("natural", "ibp", "crown-ibp", "crown-ibp+lf"):
        step, opt = _jax_step(method, apply_fn, 10, eps)
        opt_state = opt.init(params)
        t_ours = _median(
            lambda step=step, o=opt_state: jax.block_until_ready(step(params, o, x, y))
        )
        if method.endswith("+lf"):
            torch_step = _torch_fused_step(torch, net, x_t, y_t, eps, auto_lirpa)
        else:
            torch_step = _torch_step(torch, bounded, net, method, x_t, y_t, C_t, eps, auto_lirpa)
        try:
            lirpa_ms, failure = 1e3 * _median(torch_step), None
        except RuntimeError as e:  # auto_LiRPA 0.3's loss-fusion backward under torch 2.x
            lirpa_ms, failure = None, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        rows.append(
            {
                "model": name,
                "what": f"train step {method}",
                "batch": batch,
                "jaxcert_ms": 1e3 * t_ours,
                "lirpa_ms": lirpa_ms,
                "max_rel_diff": None,
                "failure": failure,
            }
        )
        print(rows[-1], flush=True)
    return rows


def _compare_fused(torch, auto_lirpa, name, net, apply_fn, params, x, y, eps) -> dict:
    """The loss-fusion bound of the cross-entropy on both sides, values and times."""
    x_t = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
    y_t = torch.tensor(np.asarray(y), dtype=torch.long)
    _, fused_upper = _fused_module(torch, auto_lirpa, net, x_t, y_t)
    bx = auto_lirpa.BoundedTensor(x_t, auto_lirpa.PerturbationLpNorm(norm=float("inf"), eps=eps))
    ours = xla_jit(
        lambda p, s, y: jaxcert.fused_cross_entropy_bound(lambda z: apply_fn(p, z), s, y, 10).upper
    )
    s = jaxcert.LinfBall(x, eps)

    def theirs():
        with torch.no_grad():
            return fused_upper(bx, y_t)

    a, b = np.asarray(ours(params, s, y)), theirs().numpy()
    row = {
        "model": name,
        "what": "bound crown-ibp, loss fusion (CE)",
        "batch": int(x.shape[0]),
        "jaxcert_ms": 1e3 * _median(lambda: jax.block_until_ready(ours(params, s, y))),
        "lirpa_ms": 1e3 * _median(theirs),
        "max_rel_diff": float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))),
        "mean_bounds": (float(np.mean(a)), float(np.mean(b))),
    }
    print(row, flush=True)
    return row


def to_markdown(rows, header) -> str:
    out = [
        f"Measured {header['date']} on {header['machine']}: jax {header['jax']}, torch "
        f"{header['torch']}, auto_LiRPA {header['lirpa']}, with `{header['command']}`.",
        "",
        "| model | what | batch | jaxcert ms | auto_LiRPA ms | auto_LiRPA / jaxcert | "
        "max rel. diff of bounds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        diff = "-" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
        if r["lirpa_ms"] is None:
            theirs, ratio = "failed (see below)", "-"
        else:
            theirs, ratio = f"{r['lirpa_ms']:.1f}", f"{r['lirpa_ms'] / r['jaxcert_ms']:.2f}"
        out.append(
            f"| {r['model']} | {r['what']} | {r['batch']} | {r['jaxcert_ms']:.1f} | "
            f"{theirs} | {ratio} | {diff} |"
        )
    for r in rows:
        if r.get("failure"):
            out.append(f"\n{r['model']}, {r['what']}: auto_LiRPA raised {r['failure']}")
    for r in rows:
        if "mean_bounds" in r:
            ours, theirs = r["mean_bounds"]
            out.append(
                f"\n{r['model']}, loss fusion: mean CE upper bound {ours:.4f} (jaxcert) vs "
                f"{theirs:.4f} (auto_LiRPA). The two fuse the same way but relax the exp "
                "input over different intermediate intervals, so they are not expected to agree."
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="DM-small only")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--full-batch", type=int, default=2, help="batch of full CROWN")
    args = parser.parse_args(argv)
    torch, lirpa = load_auto_lirpa()
    if torch is None:
        print(f"auto_LiRPA is not available ({lirpa}); nothing to compare. See the docstring.")
        return
    jax.config.update("jax_default_matmul_precision", "highest")
    rows = compare(torch, lirpa, "dm_small", (28, 28, 1), 100, args.full_batch, 0.3)
    if not args.quick:
        rows += compare(torch, lirpa, "dm_medium", (32, 32, 3), 64, args.full_batch, 8 / 255)
    header = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {jax.default_backend()}",
        "jax": jax.__version__,
        "torch": torch.__version__,
        "lirpa": getattr(lirpa, "__version__", "?"),
        "command": "python -m benchmarks.lirpa" + (" --quick" if args.quick else ""),
    }
    body = to_markdown(rows, header)
    print(body)
    if args.write:
        write_section("lirpa", "Side by side with auto_LiRPA", body)


if __name__ == "__main__":
    main(sys.argv[1:])
