"""The training loop: one jit-compiled step, data-parallel, checkpointed, resumable.

* The step closes over the method's loss, the optimizer and the schedules; it takes
  ``(state, x, y)`` and returns the next state and the step's metrics.
* The batch is sharded over every local device (``jax.sharding.Mesh`` on a ``data``
  axis); parameters are replicated. One device or several run the same program.
* Randomness per step is ``fold_in(key, step)`` and the data order depends only on
  ``(seed, epoch)``, so a run resumed from a checkpoint repeats the uninterrupted one.
* Checkpoints (orbax, :mod:`jaxcert.checkpoints`) are written every
  ``checkpoint_every_steps`` and at the end, from finite states, and kept until the next
  step proves them good. A non-finite loss or gradient, or a loss above
  ``train.max_loss`` (divergence), stops the run with a message naming the step and the
  last good checkpoint; the unproven ones are discarded, so a resume starts from a state
  that trained well. A corrupt latest checkpoint is skipped (with a warning) for the
  newest readable one.
* One run per work directory (:mod:`jaxcert.workdir`); SIGINT and SIGTERM (preemption)
  let the in-flight checkpoint finish, and a resume rewrites ``metrics.jsonl`` so that it
  holds one row per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcert import data as data_lib
from jaxcert import schedules as sched
from jaxcert.checkpoints import Checkpoints
from jaxcert.errors import (
    CheckpointError,
    ConfigError,
    TrainingDiverged,
    TrainingInterrupted,
    WorkdirLocked,
)
from jaxcert.methods import make_loss
from jaxcert.models import get_model
from jaxcert.workdir import locked
from jaxcert.xla_options import jit as xla_jit

Array = jax.Array

__all__ = [
    "TrainState",
    "Experiment",
    "build",
    "make_train_step",
    "train",
    "restore_params",
    "CheckpointError",
    "ConfigError",
    "TrainingDiverged",
    "TrainingInterrupted",
    "WorkdirLocked",
]


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; a pytree, checkpointed whole."""

    step: Array
    params: Any
    opt_state: Any
    key: Array
    # What a method carries between steps (BCP's power-iteration vectors); {} if none.
    method_state: Any = flax.struct.field(default_factory=dict)
    # Batch-norm running averages; {} for models without batch norm.
    batch_stats: Any = flax.struct.field(default_factory=dict)


@dataclasses.dataclass
class Experiment:
    """The pieces a config builds: data, model, loss, optimizer and schedules."""

    dataset: data_lib.Dataset
    model: Any
    apply_fn: Callable[[Any, Array], Array]
    loss_fn: Callable[..., Any]
    optimizer: optax.GradientTransformation
    learning_rate: optax.Schedule
    schedules: sched.Schedules
    steps_per_epoch: int
    total_steps: int
    bn_momentum: float | None = None  # batch-norm models: running averages' momentum


def load_data(config: Any) -> data_lib.Dataset:
    d = config.data
    return data_lib.load_dataset(
        d.name,
        path=d.path or None,
        data_dir=d.data_dir or None,
        validation_size=d.validation_size,
        seed=config.seed,
        train_size=d.train_size if d.train_size > 0 else None,
        test_size=d.test_size if d.test_size > 0 else None,
    )


def build_model(
    config: Any, dataset: data_lib.Dataset
) -> tuple[Any, Callable[[Any, Array], Array]]:
    """The model (normalising inside with the data's statistics) and ``apply(params, x)``."""
    kwargs: dict[str, Any] = {"num_classes": dataset.num_classes}
    if config.model.normalize:
        kwargs.update(mean=tuple(dataset.mean), std=tuple(dataset.std))
    model = get_model(config.model.name, **kwargs)

    def apply_fn(params: Any, x: Array) -> Array:
        # Batch-norm models are evaluated with {"params": ..., "batch_stats": ...}.
        if isinstance(params, dict) and set(params) == {"params", "batch_stats"}:
            return cast(Array, model.apply(params, x))
        return cast(Array, model.apply({"params": params}, x))

    return model, apply_fn


def clean_batch_stats(model: Any, params: Any, running: Any, x: Array) -> Any:
    """The batch-norm statistics of the (clean) batch ``x``: the model cloned with
    momentum 0 and run in training mode. A function of ``params``, so the gradient
    flows through them, as in the CROWN-IBP code's batch-norm training."""
    _, updates = model.clone(bn_momentum=0.0).apply(
        {"params": params, "batch_stats": running}, x, train=True, mutable=["batch_stats"]
    )
    return updates["batch_stats"]


def _with_batch_stats(model: Any, name: str, num_classes: int, method_config: Any):
    """The method's loss for a batch-norm model: every forward pass and bound of the
    step uses eval-mode batch norm with the clean batch's statistics (constants of the
    perturbation, so the bounds stay sound); they are returned in the metrics as
    ``batch_stats`` for the running averages."""

    def eval_mode(stats: Any) -> Callable[[Any, Array], Array]:
        return lambda p, z: model.apply({"params": p, "batch_stats": stats}, z)

    def method_loss(stats: Any):
        return make_loss(name, eval_mode(stats), num_classes, method_config)

    def loss_fn(params, x, y, hparams, rng):
        stats = clean_batch_stats(model, params, hparams["batch_stats"], x)
        loss, metrics = method_loss(stats)(params, x, y, hparams, rng)
        return loss, {**metrics, "batch_stats": stats}

    def init_method_state(params, x, key):
        # The method's own initial state (e.g. BCP's power-iteration vectors), on the
        # model with x's statistics: the state's shapes do not depend on their values.
        stats = clean_batch_stats(model, params, model.init(key, x)["batch_stats"], x)
        return method_loss(stats).init_method_state(params, x, key)

    if hasattr(method_loss({}), "init_method_state"):  # building a loss traces nothing
        loss_fn.init_method_state = init_method_state  # type: ignore[attr-defined]
    return loss_fn


def build(config: Any, dataset: data_lib.Dataset | None = None) -> Experiment:
    """Builds data, model, loss, optimizer and schedules from a validated config."""
    dataset = dataset or load_data(config)
    model, apply_fn = build_model(config, dataset)
    t = config.train
    steps_per_epoch = data_lib.num_batches(len(dataset.x_train), t.batch_size)
    total = t.epochs * steps_per_epoch
    if t.warmup_steps >= 0 and t.warmup_steps + t.ramp_steps > total:
        raise ConfigError(
            f"config key 'train.ramp_steps': the eps ramp-up ends at step "
            f"{t.warmup_steps + t.ramp_steps}, after the {total} steps of {t.epochs} epochs"
        )
    m = config.method
    schedules = sched.mixed_schedules(
        eps=m.eps_train,
        warmup_steps=t.warmup_steps if t.warmup_steps >= 0 else t.warmup_epochs * steps_per_epoch,
        ramp_steps=t.ramp_steps if t.ramp_steps >= 0 else t.ramp_epochs * steps_per_epoch,
        eps_shape=t.eps_shape,
        kappa_start=m.kappa_start,
        kappa_end=m.kappa_end,
        beta_start=m.beta_start,
        beta_end=m.beta_end,
        lam_start=m.lam_start,
        lam_end=m.lam_end,
    )
    lr = sched.make_learning_rate(
        base=t.lr,
        steps_per_epoch=steps_per_epoch,
        decay=t.lr_decay,
        decay_epochs=tuple(t.decay_epochs),
        decay_factor=t.decay_factor,
        halve_every=t.halve_every if t.halve_every > 0 else None,
        halve_after=t.halve_after,
    )
    optimizer = sched.make_optimizer(
        name=t.optimizer,
        learning_rate=lr,
        weight_decay=t.weight_decay,
        grad_clip_norm=t.grad_clip_norm if t.grad_clip_norm > 0 else None,
    )
    sample = jax.ShapeDtypeStruct((1, *dataset.x_train.shape[1:]), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), sample)
    bn_momentum = None
    if "batch_stats" in shapes:
        bn_momentum = getattr(model, "bn_momentum", None)
        if bn_momentum is None:
            raise ValueError(
                f"model {type(model).__name__} has batch-norm statistics but no "
                "'bn_momentum' attribute: training needs it to read the clean batch's "
                "statistics (see jaxcert.models.ResNetSmall)"
            )
        loss_fn = _with_batch_stats(model, m.name, dataset.num_classes, m)
    else:
        loss_fn = make_loss(m.name, apply_fn, dataset.num_classes, m)
    extra = set(shapes) - {"params", "batch_stats"}
    if extra:
        raise ValueError(
            f"model {type(model).__name__} has state {sorted(extra)}; only 'params' and "
            "'batch_stats' are supported"
        )
    return Experiment(
        dataset,
        model,
        apply_fn,
        loss_fn,
        optimizer,
        lr,
        schedules,
        steps_per_epoch,
        total,
        bn_momentum,
    )


def init_state(exp: Experiment, seed: int) -> TrainState:
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    sample = jnp.zeros((1, *exp.dataset.x_train.shape[1:]), jnp.float32)
    variables = exp.model.init(init_key, sample)
    params = variables["params"]
    init_method = getattr(exp.loss_fn, "init_method_state", None)
    method_state = init_method(params, sample, init_key) if init_method is not None else {}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=exp.optimizer.init(params),
        key=train_key,
        method_state=method_state,
        batch_stats=variables.get("batch_stats", {}),
    )


def make_train_step(exp: Experiment, augment: bool) -> Callable[..., tuple[TrainState, dict]]:
    """``step(state, x, y, use_linear) -> (state, metrics)``, pure; the caller jits it.

    ``use_linear`` is static: False where the schedule has ``beta == 0`` or
    ``kappa == 1``, so the mixed objective skips the linear bound in those phases (see
    :mod:`jaxcert.methods.certified`). At most two programs are compiled. ``lam``, when
    given, replaces the scheduled regulariser weight (adaptive lambda).
    """

    def step(
        state: TrainState, x: Array, y: Array, use_linear: bool = True, lam: Array | None = None
    ) -> tuple[TrainState, dict[str, Array]]:
        rng = jax.random.fold_in(state.key, state.step)
        aug_key, loss_key = jax.random.split(rng)
        if augment:
            x = data_lib.augment(aug_key, x)
        hparams = {
            "eps": exp.schedules.eps(state.step),
            "kappa": exp.schedules.kappa(state.step),
            "beta": exp.schedules.beta(state.step),
            "lam": exp.schedules.lam(state.step) if lam is None else lam,
        }
        grad_fn = jax.value_and_grad(exp.loss_fn, has_aux=True)
        inputs = {
            **hparams,
            "use_linear": use_linear,
            "method_state": state.method_state,
            "batch_stats": state.batch_stats,
        }
        (_, metrics), grads = grad_fn(state.params, x, y, inputs, loss_key)
        method_state = metrics.pop("method_state", state.method_state)
        batch_stats = state.batch_stats
        if exp.bn_momentum is not None:
            m = exp.bn_momentum
            batch_stats = jax.tree.map(
                lambda old, new: m * old + (1 - m) * jax.lax.stop_gradient(new),
                state.batch_stats,
                metrics.pop("batch_stats"),
            )
        updates, opt_state = exp.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            **metrics,
            **hparams,
            "lr": exp.learning_rate(state.step),
            "grad_norm": optax.tree.norm(grads),
        }
        new_state = dataclasses.replace(
            state,
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            method_state=method_state,
            batch_stats=batch_stats,
        )
        return new_state, metrics

    return step


def _mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


def _all_finite(tree: Any) -> bool:
    return all(
        bool(jnp.all(jnp.isfinite(leaf)))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
    )


def _to_python(metrics: dict[str, Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def restore_params(config: Any, workdir: str | Path) -> tuple[Experiment, Any, int]:
    """The experiment and the parameters of the newest readable checkpoint in ``workdir``.

    For batch-norm models the "parameters" are ``{"params", "batch_stats"}`` (the
    running averages), which ``exp.apply_fn`` evaluates in eval mode. An unreadable
    newer checkpoint is skipped with a warning naming it.

    Raises:
      CheckpointError: no checkpoint, or none readable.
    """
    exp = build(config)
    checkpoints = Checkpoints(workdir, config.train.keep_checkpoints)
    try:
        state, step, _ = checkpoints.restore_latest(init_state(exp, config.seed))
    finally:
        checkpoints.close()
    if exp.bn_momentum is not None:  # what exp.apply_fn takes for batch-norm models
        return exp, {"params": state.params, "batch_stats": state.batch_stats}, step
    return exp, state.params, step


@functools.lru_cache(maxsize=8)
def _metrics_fn(loss_fn: Callable[..., Any]) -> Callable[..., Any]:
    """The jitted metrics of ``loss_fn``, one per loss so that each epoch's validation
    pass reuses the compiled program instead of tracing a new lambda."""
    return xla_jit(lambda p, x, y, hp: loss_fn(p, x, y, hp, jax.random.PRNGKey(0))[1])


def validation_means(
    exp: Experiment,
    params: Any,
    hparams: dict[str, Any],
    batch_size: int,
    batch_stats: Any = None,
) -> dict[str, float]:
    """The method's metrics averaged over the validation split (full batches)."""
    ds = exp.dataset
    if ds.x_val is None or ds.y_val is None or len(ds.x_val) == 0:
        raise ValueError("no validation split: set data.validation_size > 0")
    hparams = {**hparams, "batch_stats": batch_stats if batch_stats is not None else {}}
    metrics_fn = _metrics_fn(exp.loss_fn)
    totals: dict[str, float] = {}
    n = 0
    size = min(batch_size, len(ds.x_val))
    for x, y in data_lib.batches(ds.x_val, ds.y_val, size, seed=0, epoch=0, shuffle=False):
        metrics = metrics_fn(params, jnp.asarray(x), jnp.asarray(y), hparams)
        metrics = {k: v for k, v in metrics.items() if k not in ("method_state", "batch_stats")}
        values = _to_python(metrics)
        for k, v in values.items():
            totals[k] = totals.get(k, 0.0) + v
        n += 1
    return {k: v / n for k, v in totals.items()}


def _adaptive_lambda_for_epoch(
    exp: Experiment, config: Any, state: TrainState, step: int, record_path: Path
) -> float:
    """SingleProp's AHS lambda for the epoch starting at ``step``, recorded in
    ``record_path`` so that a resumed run reuses the value instead of recomputing it
    from mid-epoch parameters."""
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if str(step) in record:
        return float(record[str(step)]["lam"])
    hparams = {
        "eps": exp.schedules.eps(step),
        "kappa": exp.schedules.kappa(step),
        "beta": exp.schedules.beta(step),
        "lam": jnp.float32(0.0),
    }
    means = validation_means(exp, state.params, hparams, config.train.batch_size, state.batch_stats)
    if "regularizer" not in means:
        raise ValueError(
            f"method.adaptive_lambda needs a regulariser method (CE + lambda R); "
            f"{config.method.name!r} reports no 'regularizer'"
        )
    lam = sched.adaptive_lambda(
        max(means["natural_loss"], 0.0), max(means["regularizer"], 0.0), config.method.ahs_gamma
    )
    record[str(step)] = {
        "lam": lam,
        "val_natural_loss": means["natural_loss"],
        "val_regularizer": means["regularizer"],
        "val_clean_acc": means.get("clean_acc"),
    }
    record_path.write_text(json.dumps(record, indent=1))
    return lam


def train(config: Any, workdir: str | Path, *, progress: bool = True) -> tuple[TrainState, list]:
    """Trains from the config (resuming from ``workdir`` if it has a checkpoint).

    Returns:
      The final state and the list of logged metric records (also in
      ``workdir/metrics.jsonl``).

    Raises:
      TrainingDiverged: a non-finite loss or gradient, or a loss above
        ``train.max_loss``; the message names the last good checkpoint.
      TrainingInterrupted: SIGINT or SIGTERM, after the in-flight checkpoint finished.
      WorkdirLocked: another run holds ``workdir``.
    """
    workdir = Path(workdir)
    with locked(workdir), _interrupts_as_exceptions():
        return _train(config, workdir, progress)


@contextlib.contextmanager
def _interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM raises in the main thread as SIGINT does, so that ``finally`` blocks (the
    in-flight checkpoint) run before a preempted job exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _keep_metrics_up_to(path: Path, step: int) -> None:
    """Drops the rows after ``step`` (logged before an interruption, about to be
    logged again by the resumed run): one row per step."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line).get("step", 0) <= step]
    if len(kept) != len(rows):
        path.write_text("".join(line + "\n" for line in kept))


def _divergence(values: dict[str, float], max_loss: float) -> str | None:
    """Why this step's metrics say training diverged, or None."""
    loss = values["loss"]
    if not np.isfinite(loss):
        return f"non-finite loss ({loss})"
    if not np.isfinite(values.get("grad_norm", 0.0)):
        return f"non-finite gradient (norm {values['grad_norm']})"
    if loss > max_loss:
        return f"loss {loss:.4g} above train.max_loss = {max_loss:g} (divergence)"
    return None


def _train(config: Any, workdir: Path, progress: bool) -> tuple[TrainState, list]:
    exp = build(config)
    t = config.train
    n_devices = jax.device_count()
    if t.batch_size % n_devices:
        raise ValueError(
            f"train.batch_size={t.batch_size} is not divisible by the {n_devices} devices"
        )
    mesh = _mesh()
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec("data"))

    state = init_state(exp, config.seed)
    checkpoints = Checkpoints(workdir, t.keep_checkpoints)
    if checkpoints.steps():
        try:
            state, latest, broken = checkpoints.restore_latest(state)
        except CheckpointError:
            checkpoints.close()  # orbax's threads would otherwise outlive the error
            raise
        checkpoints.move_aside([s for s in broken if s > latest])
    state = jax.device_put(state, replicated)
    start_step = int(state.step)
    metrics_path = workdir / "metrics.jsonl"
    _keep_metrics_up_to(metrics_path, start_step)

    step_fn = xla_jit(make_train_step(exp, config.data.augment), donate_argnums=0, static_argnums=3)
    adaptive = bool(config.method.get("adaptive_lambda", False))
    lam: Array | None = None
    records: list[dict] = []
    bar = _progress(exp.total_steps, start_step, progress)
    board = _TensorBoard(workdir, purge_step=start_step + 1 if start_step else None)
    global_step = start_step
    try:
        for epoch in range(start_step // exp.steps_per_epoch, t.epochs):
            batch_iter = data_lib.batches(
                exp.dataset.x_train,
                exp.dataset.y_train,
                t.batch_size,
                seed=config.seed,
                epoch=epoch,
            )
            for i, (x, y) in enumerate(batch_iter):
                global_step = epoch * exp.steps_per_epoch + i
                if global_step < start_step:
                    continue
                if adaptive and (lam is None or i == 0):
                    epoch_start = epoch * exp.steps_per_epoch
                    lam = jnp.float32(
                        _adaptive_lambda_for_epoch(
                            exp, config, state, epoch_start, workdir / "ahs.json"
                        )
                    )
                x = jax.device_put(jnp.asarray(x), sharded)
                y = jax.device_put(jnp.asarray(y), sharded)
                tic = time.perf_counter()
                # The linear bound only matters where it has weight: beta > 0, kappa < 1.
                use_linear = bool(
                    exp.schedules.beta(global_step) > 0 and exp.schedules.kappa(global_step) < 1
                )
                state, metrics = step_fn(state, x, y, use_linear, lam)
                values = _to_python(metrics)
                values["step_time"] = time.perf_counter() - tic
                reason = _divergence(values, t.max_loss)
                if reason is not None:
                    dropped = checkpoints.discard_unverified()
                    good = checkpoints.last_good()
                    where = (
                        f"the last good checkpoint is step {good} in {workdir / 'checkpoints'}"
                        if good is not None
                        else "no checkpoint was proven good yet"
                    )
                    raise TrainingDiverged(
                        f"{reason} at step {global_step + 1} (epoch {epoch}); {where}"
                        + (f" (discarded the unproven step(s) {dropped})" if dropped else "")
                        + "; lower train.lr or raise train.max_loss, then run again"
                    )
                step_done = global_step + 1
                checkpoints.verify_before(step_done)  # their state gave this good step
                if step_done % t.log_every_steps == 0 or step_done == exp.total_steps:
                    record = {"step": step_done, "epoch": epoch, **values}
                    records.append(record)
                    with metrics_path.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    board.write(step_done, values)
                if step_done % t.checkpoint_every_steps == 0 or step_done == exp.total_steps:
                    if _all_finite(state.params):
                        checkpoints.save(step_done, state)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.3f}", eps=f"{values['eps']:.3f}")
    except KeyboardInterrupt as err:
        checkpoints.wait_until_finished()
        saved = checkpoints.steps()
        raise TrainingInterrupted(
            f"interrupted ({err or 'SIGINT'}) at step {global_step}; the last checkpoint is "
            f"step {saved[-1] if saved else None} in {workdir / 'checkpoints'}: run the same "
            "command to resume"
        ) from None
    finally:
        board.close()
        checkpoints.close()
        if bar is not None:
            bar.close()
    return state, records


class _TensorBoard:
    """Scalars to TensorBoard event files in ``workdir/tensorboard`` when tensorboardX is
    installed (``pip install jaxcert[tensorboard]``); otherwise nothing. A resumed run
    purges the events from ``purge_step`` on, which it logs again."""

    def __init__(self, workdir: Path, purge_step: int | None = None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(str(workdir / "tensorboard"), purge_step=purge_step)

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"train/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, initial=initial, desc="train", unit="step", leave=False)
