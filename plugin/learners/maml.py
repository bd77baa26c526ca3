"""Model-agnostic meta-learning (Finn et al. 2017) on ``torch.func``: MAML, first-order MAML, Meta-SGD.

The engine is a handful of pure functions over a parameter dictionary, so that other jobs
can run one piece of it on their own (a federated client computes :func:`meta_gradient` on
its tasks; a fusion head is adapted with :func:`inner_adapt`):

- :func:`stack_tasks` pads tasks of different sizes into one :class:`TaskBatch` (weights 0 on padding);
- :func:`inner_adapt` takes ``steps`` gradient steps on a support set, with per-parameter learning rates;
- :func:`query_loss` is the loss on the query set after adapting on the support set (one task);
- :func:`meta_loss` averages it over the tasks of a batch with ``vmap``;
- :func:`meta_gradient` differentiates that through the inner loop (second order) or not (first order).

:class:`MAML` wraps them in a scikit-learn-like estimator: settings in ``__init__``,
:meth:`MAML.meta_fit`, :meth:`MAML.adapt` (returns an :class:`AdaptedModel`), :meth:`MAML.predict`,
and weights saved as safetensors.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap

from medmeta.progress import progress
from medmeta.tasks import Task

Params = dict[str, Tensor]
#: ``loss(prediction, target) -> one loss per example``.
Loss = Callable[[Tensor, Tensor], Tensor]


def _regression(elementwise: Callable[[Tensor], Tensor]) -> Loss:
    """A per-example regression loss that ignores NaN targets (a forecast horizon with no reading)."""

    def loss(pred: Tensor, target: Tensor) -> Tensor:
        target = target.reshape(pred.shape)
        seen = ~torch.isnan(target)
        diff = torch.where(seen, pred - torch.where(seen, target, 0.0), 0.0)
        per = elementwise(diff).reshape(len(pred), -1)
        count = seen.reshape(len(pred), -1).sum(1).clamp(min=1)
        return per.sum(1) / count

    return loss


def _cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits, target.long(), reduction="none")


#: Losses by name; each returns one value per example.
LOSSES: dict[str, Loss] = {
    "mse": _regression(torch.square),
    "l1": _regression(torch.abs),
    "huber": _regression(lambda d: F.huber_loss(d, torch.zeros_like(d), reduction="none")),
    "cross_entropy": _cross_entropy,
}


def resolve_loss(loss: str | Loss) -> Loss:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)} or a callable")
    return LOSSES[loss]


@dataclass(frozen=True)
class TaskBatch:
    """Tasks stacked along a first axis; ``*_w`` is 1 for real examples and 0 for padding."""

    support_x: Tensor
    support_y: Tensor
    support_w: Tensor
    query_x: Tensor
    query_y: Tensor
    query_w: Tensor

    def __len__(self) -> int:
        return len(self.support_x)

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.support_x, self.support_y, self.support_w, self.query_x, self.query_y, self.query_w)


def _pad(arrays: Sequence[Tensor], size: int) -> tuple[Tensor, Tensor]:
    """Stack arrays of different lengths, zero-padded to ``size`` rows, and a mask of real rows."""
    ref = next((a for a in arrays if len(a)), arrays[0])
    out = torch.zeros((len(arrays), size, *ref.shape[1:]), dtype=ref.dtype)
    mask = torch.zeros((len(arrays), size))
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
        mask[i, : len(a)] = 1.0
    return out, mask


def as_tensor(x: Any, *, target: bool = False, classification: bool = False) -> Tensor:
    """Inputs and regression targets as float32, class labels as int64."""
    dtype = torch.int64 if (target and classification) else torch.float32
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=dtype)


def stack_tasks(tasks: Sequence[Task], *, classification: bool = False) -> TaskBatch:
    """Pad and stack tasks (which may differ in support and query size) for :func:`meta_loss`.

    A task with an empty support set is allowed: it is not adapted (its support weights are all 0),
    which is how "k = 0" tasks train the initial model to be good before any adaptation.
    """
    if not tasks:
        raise ValueError("no tasks to stack")
    parts = {}
    for part in ("support", "query"):
        xs = [as_tensor(getattr(t, f"{part}_x")) for t in tasks]
        ys = [as_tensor(getattr(t, f"{part}_y"), target=True, classification=classification) for t in tasks]
        size = max(1, max(len(x) for x in xs))
        if any(len(x) == 0 for x in xs):  # give empty sets the feature shape of the others
            shape = next((x.shape[1:] for x in xs if len(x)), None)
            if shape is None:
                other = "query" if part == "support" else "support"
                shape = as_tensor(getattr(tasks[0], f"{other}_x")).shape[1:]
            xs = [x if len(x) else torch.zeros((0, *shape)) for x in xs]
            yshape = next((y.shape[1:] for y in ys if len(y)), ())
            ys = [y if len(y) else torch.zeros((0, *yshape), dtype=y.dtype) for y in ys]
        parts[f"{part}_x"], parts[f"{part}_w"] = _pad(xs, size)
        parts[f"{part}_y"], _ = _pad(ys, size)
    if float(parts["query_w"].sum(1).min()) == 0:
        raise ValueError("every task needs at least one query example")
    return TaskBatch(**parts)


def weighted_loss(model: nn.Module, params: Params, x: Tensor, y: Tensor, w: Tensor, loss: Loss,
                  buffers: Params | None = None) -> Tensor:
    """Mean loss of ``model`` with ``params`` over the examples with weight 1 (0 when there are none)."""
    pred = functional_call(model, (params, buffers or {}), (x,))
    return (loss(pred, y) * w).sum() / w.sum().clamp(min=1e-8)


def inner_adapt(model: nn.Module, params: Params, inner_lrs: Params, x: Tensor, y: Tensor, w: Tensor | None = None,
                *, loss: str | Loss = "mse", steps: int = 1, first_order: bool = False,
                buffers: Params | None = None) -> Params:
    """Adapted parameters after ``steps`` gradient steps on one support set.

    Only the parameters named in ``inner_lrs`` are adapted (each with its own learning-rate
    tensor, which may be a scalar or have the parameter's shape); the rest stay as they are.
    With ``first_order`` the inner gradients are not differentiated through (FOMAML).
    """
    fn = resolve_loss(loss)
    w = torch.ones(len(x)) if w is None else w
    fast = dict(params)
    for _ in range(steps):
        def support_loss(adapted: Params, fast: Params = fast) -> Tensor:
            return weighted_loss(model, {**fast, **adapted}, x, y, w, fn, buffers)

        grads = grad(support_loss)({name: fast[name] for name in inner_lrs})
        if first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        fast = {**fast, **{name: fast[name] - inner_lrs[name] * g for name, g in grads.items()}}
    return fast


def query_loss(model: nn.Module, params: Params, inner_lrs: Params, support_x: Tensor, support_y: Tensor,
               support_w: Tensor, query_x: Tensor, query_y: Tensor, query_w: Tensor, *, loss: str | Loss = "mse",
               steps: int = 1, first_order: bool = False, buffers: Params | None = None) -> Tensor:
    """One task's query loss after adapting on its support set."""
    fn = resolve_loss(loss)
    fast = inner_adapt(model, params, inner_lrs, support_x, support_y, support_w, loss=fn, steps=steps,
                       first_order=first_order, buffers=buffers)
    return weighted_loss(model, fast, query_x, query_y, query_w, fn, buffers)


def meta_loss(model: nn.Module, params: Params, inner_lrs: Params, batch: TaskBatch, *, loss: str | Loss = "mse",
              steps: int = 1, first_order: bool = False, buffers: Params | None = None) -> Tensor:
    """Mean post-adaptation query loss over the tasks of ``batch``, vectorised over tasks with ``vmap``."""
    fn = resolve_loss(loss)

    def one(sx, sy, sw, qx, qy, qw):
        return query_loss(model, params, inner_lrs, sx, sy, sw, qx, qy, qw, loss=fn, steps=steps,
                          first_order=first_order, buffers=buffers)

    return vmap(one)(*batch.tensors()).mean()


def meta_gradient(model: nn.Module, params: Params, inner_lrs: Params, batch: TaskBatch, *,
                  loss: str | Loss = "mse", steps: int = 1, first_order: bool = False,
                  buffers: Params | None = None) -> tuple[Tensor, Params, Params]:
    """``(meta_loss, gradient w.r.t. params, gradient w.r.t. inner learning rates)`` for one batch."""

    def objective(p: Params, lrs: Params) -> Tensor:
        return meta_loss(model, p, lrs, batch, loss=loss, steps=steps, first_order=first_order, buffers=buffers)

    (g_params, g_lrs), value = grad_and_value(objective, argnums=(0, 1))(params, inner_lrs)
    return value, g_params, g_lrs


def _key(name: str) -> str:
    """Parameter names as ParameterDict keys (no dots allowed there)."""
    return name.replace(".", "__")


class AdaptedModel:
    """The network with parameters adapted to one task (patient, group, subject): call or :meth:`predict`."""

    def __init__(self, model: nn.Module, params: Params, buffers: Params, classification: bool) -> None:
        self.model, self.params, self.buffers, self.classification = model, params, buffers, classification

    def __call__(self, x: Any) -> Tensor:
        with torch.no_grad():
            return functional_call(self.model, (self.params, self.buffers), (as_tensor(x),))

    def decision_function(self, x: Any) -> np.ndarray:
        """Raw network outputs (regression values, or class logits)."""
        return self(x).numpy()

    def predict(self, x: Any) -> np.ndarray:
        """Regression outputs, or class labels for a classifier."""
        out = self(x)
        return out.argmax(-1).numpy() if self.classification else out.numpy()

    def predict_proba(self, x: Any) -> np.ndarray:
        if not self.classification:
            raise ValueError("predict_proba needs a classifier (loss='cross_entropy')")
        return self(x).softmax(-1).numpy()


class MAML(nn.Module):
    """Meta-learn an initialisation (and, with ``meta_sgd``, per-parameter inner learning rates) over tasks.

    ``model`` is any ``nn.Module`` without random layers (for example MONAI's ``FullyConnectedNet``).
    ``adapt`` lists the parameter-name prefixes adapted in the inner loop (``None``: all of them;
    ``["output"]``: only the head, as in ANIL). ``loss`` is a name in :data:`LOSSES` (``"cross_entropy"``
    makes a classifier). ``weight_decay`` (L2, Adam) applies to the network, not to the learning rates.
    Training stops after ``max_steps`` meta-batches or ``max_seconds``.
    """

    def __init__(self, model: nn.Module, *, loss: str = "mse", inner_steps: int = 1, inner_lr: float = 0.01,
                 meta_sgd: bool = True, first_order: bool = False, adapt: Sequence[str] | None = None,
                 meta_lr: float = 1e-3, meta_batch_size: int = 8, max_steps: int = 1000,
                 max_seconds: float | None = None, weight_decay: float = 0.0, grad_clip: float | None = 10.0,
                 seed: int = 0) -> None:
        super().__init__()
        if inner_steps < 0 or meta_batch_size < 1:
            raise ValueError(f"need inner_steps >= 0 and meta_batch_size >= 1 (got {inner_steps}, {meta_batch_size})")
        resolve_loss(loss)
        self.loss, self.inner_steps, self.inner_lr, self.meta_sgd = loss, inner_steps, inner_lr, meta_sgd
        self.first_order, self.adapt_prefixes = first_order, list(adapt) if adapt is not None else None
        self.meta_lr, self.meta_batch_size, self.max_steps, self.max_seconds = (meta_lr, meta_batch_size, max_steps,
                                                                                max_seconds)
        self.weight_decay, self.grad_clip, self.seed = weight_decay, grad_clip, seed
        self.model = model
        adapted = [n for n, _ in model.named_parameters()
                   if self.adapt_prefixes is None or any(n.startswith(p) for p in self.adapt_prefixes)]
        if not adapted:
            raise ValueError(f"no parameter of the model starts with {self.adapt_prefixes}")
        params = dict(model.named_parameters())
        self.inner_lrs = nn.ParameterDict({
            _key(n): nn.Parameter(torch.full_like(params[n], inner_lr), requires_grad=meta_sgd) for n in adapted
        })
        self.history_: dict[str, Any] = {}

    # -- settings --------------------------------------------------------------------------------
    @property
    def classification(self) -> bool:
        return self.loss == "cross_entropy"

    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` settings except the network (scikit-learn's convention)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self", "model")]
        return {n: (self.adapt_prefixes if n == "adapt" else getattr(self, n)) for n in names}

    # -- the functional state --------------------------------------------------------------------
    def params(self) -> Params:
        """The meta-learned initial parameters, detached."""
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def lrs(self) -> Params:
        """The inner learning rates by parameter name, detached."""
        return {n.replace("__", "."): p.detach() for n, p in self.inner_lrs.items()}

    def buffers_(self) -> Params:
        return {n: b.detach() for n, b in self.model.named_buffers()}

    def _settings(self, steps: int | None = None) -> dict[str, Any]:
        return {"loss": self.loss, "steps": self.inner_steps if steps is None else steps,
                "first_order": self.first_order, "buffers": self.buffers_()}

    # -- estimator surface -----------------------------------------------------------------------
    def meta_fit(self, tasks: Iterable[Task], *, val_tasks: Sequence[Task] | None = None, val_every: int = 50,
                 show_progress: bool = True) -> MAML:
        """Meta-train on ``tasks`` (any iterable, endless generators included) in meta-batches.

        With ``val_tasks``, the post-adaptation query loss on them is measured every ``val_every``
        steps and the best weights are kept (early stopping on held-out tasks).
        """
        torch.manual_seed(self.seed)
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": list(self.model.parameters()), "weight_decay": self.weight_decay}]
        if self.meta_sgd:  # the learning rates are not shrunk towards 0
            groups.append({"params": list(self.inner_lrs.parameters()), "weight_decay": 0.0})
        optimiser = torch.optim.Adam(groups, lr=self.meta_lr)
        named = dict(self.named_parameters())
        stream = iter(tasks)
        val_batch = stack_tasks(val_tasks, classification=self.classification) if val_tasks else None
        losses, val_losses, best = [], [], (float("inf"), None, 0)
        budget = self.max_seconds
        start = time.monotonic()
        n_tasks = 0
        with progress("Meta-training MAML", budget or float(self.max_steps),
                      force_terminal=None if show_progress else False) as advance:
            for step in range(1, self.max_steps + 1):
                chunk = list(islice(stream, self.meta_batch_size))
                if not chunk:
                    break
                n_tasks += len(chunk)
                batch = stack_tasks(chunk, classification=self.classification)
                value, g_params, g_lrs = meta_gradient(self.model, self.params(), self.lrs(), batch,
                                                       **self._settings())
                optimiser.zero_grad()
                for name, g in g_params.items():
                    named[f"model.{name}"].grad = g
                if self.meta_sgd:
                    for name, g in g_lrs.items():
                        named[f"inner_lrs.{_key(name)}"].grad = g
                if self.grad_clip:
                    nn.utils.clip_grad_norm_(trainable, self.grad_clip)
                optimiser.step()
                losses.append(float(value))
                if val_batch is not None and (step % val_every == 0 or step == self.max_steps):
                    val = self.task_loss(val_batch)
                    val_losses.append((step, val))
                    if val < best[0]:
                        best = (val, copy.deepcopy(self.state_dict()), step)
                elapsed = time.monotonic() - start
                advance(elapsed if budget else step, f"step {step} loss {np.mean(losses[-50:]):.4f}")
                if budget and elapsed >= budget:
                    break
        if best[1] is not None:
            self.load_state_dict(best[1])
        self.history_ = {"steps": len(losses), "tasks": n_tasks, "seconds": time.monotonic() - start,
                         "loss": losses, "val_loss": val_losses, "best_step": best[2] if best[1] else None}
        return self

    def task_loss(self, tasks: TaskBatch | Sequence[Task], steps: int | None = None) -> float:
        """Mean post-adaptation query loss over tasks (no training)."""
        batch = tasks if isinstance(tasks, TaskBatch) else stack_tasks(tasks, classification=self.classification)
        with torch.no_grad():
            return float(meta_loss(self.model, self.params(), self.lrs(), batch, **self._settings(steps)))

    def adapt(self, support_x: Any, support_y: Any = None, *, steps: int | None = None) -> AdaptedModel:
        """A predictor adapted on one support set (``support_x`` may be a :class:`Task`).

        An empty support set returns the meta-learned initial model unchanged.
        """
        if isinstance(support_x, Task):
            support_x, support_y = support_x.support_x, support_x.support_y
        x = as_tensor(support_x)
        y = as_tensor(support_y, target=True, classification=self.classification)
        params = self.params()
        if len(x):
            params = inner_adapt(self.model, params, self.lrs(), x, y, **self._settings(steps))
        return AdaptedModel(self.model, {k: v.detach() for k, v in params.items()}, self.buffers_(),
                            self.classification)

    def initial(self) -> AdaptedModel:
        """The meta-learned initial model, before any adaptation."""
        return AdaptedModel(self.model, self.params(), self.buffers_(), self.classification)

    def predict(self, x: Any) -> np.ndarray:
        """Predictions of the initial model (no adaptation: a new task with no data of its own)."""
        return self.initial().predict(x)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (settings, training summary, ``extra``) and ``model.safetensors``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        summary = {k: v for k, v in self.history_.items() if not isinstance(v, list)}
        config = {"learner": "MAML", "params": self.get_params(), "training": summary, **(extra or {})}
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory


def load_maml(directory: str | Path, model: nn.Module) -> MAML:
    """Rebuild a :class:`MAML` saved with :meth:`MAML.save` around ``model`` (same architecture).

    Weights are read from safetensors, so loading runs no code from the file.
    """
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    if config.get("learner") != "MAML":
        raise ValueError(f"{directory / 'config.json'}: not a MAML model (learner {config.get('learner')!r})")
    maml = MAML(model, **config["params"])
    maml.load_state_dict(load_file(directory / "model.safetensors"))
    maml.history_ = dict(config.get("training", {}))
    return maml
