"""``FusionModel``: a scikit-learn-like estimator over multimodal patients, with intervals per set of modalities.

- settings in ``__init__`` (a config dict rebuilds it: ``FusionModel(**config)``);
- :meth:`~FusionModel.fit` trains ``members`` fusion networks, member ``i`` on all but fold ``i`` of the
  patients, with **modality dropout** (each present modality hidden at random, never all of them), so
  every subset of modalities is a normal input. Each member's predictions on its unseen fold, made with
  every subset of the modalities those patients have, calibrate split-conformal intervals **per set of
  modalities used** (a prediction without the genotype gets the interval measured without the genotype);
- :meth:`~FusionModel.predict` / :meth:`~FusionModel.predict_proba` / :meth:`~FusionModel.predict_interval`
  work with any subset of modalities; a patient with none is an error that names them;
- :meth:`~FusionModel.transform` gives the fused representation (for metric learners);
- :meth:`~FusionModel.adapt` adapts the prediction heads to a task's support set with the MAML engine's
  :func:`~medmeta.learners.maml.inner_adapt`; :meth:`~FusionModel.meta_fit` meta-learns the networks so that
  this adaptation works (MAML with head-only adaptation, over multimodal tasks);
- :meth:`~FusionModel.save` / :meth:`~FusionModel.load`: ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

import medmeta
from medmeta.errors import DataError
from medmeta.fusion.modalities import Modality, Multimodal, modality_dropout
from medmeta.fusion.network import FusionNet
from medmeta.learners.maml import MAML, inner_adapt, resolve_loss
from medmeta.stats import conformal_bounds
from medmeta.tasks import Task

#: target transforms: (forward, inverse); a negative square root stands for 0.
TRANSFORMS = {None: (lambda y: y, lambda t: t), "sqrt": (np.sqrt, lambda t: np.square(np.maximum(t, 0))),
              "log": (np.log, np.exp)}
HEAD = "head"


def subset_key(names: Iterable[str]) -> str:
    """``["clinical", "genotype"]`` -> ``"clinical+genotype"`` (the key of a set of modalities)."""
    return "+".join(names)


class FusionModel:
    """Multimodal estimator; see the module docstring.

    ``modalities``: :class:`~medmeta.fusion.modalities.Modality` objects or their dicts. ``task``:
    ``"regression"`` or ``"classification"``. ``fusion``: ``"late"``, ``"gated"`` or ``"attention"``.
    ``target_transform`` (regression): ``None``, ``"sqrt"`` or ``"log"`` (the networks learn the
    transformed target). ``baseline``: a ``"modality.feature"`` input that the networks correct where it is
    known (for example the last HbA1c); see :class:`~medmeta.fusion.network.FusionNet`. ``adapt_steps`` and
    ``adapt_lr``: head adaptation (:meth:`adapt`).
    ``image_encoders`` maps image modalities to their frozen encoders (not saved with the model).
    """

    def __init__(self, modalities: Sequence[Modality | Mapping[str, Any]], *, task: str = "regression",
                 target: str = "y", unit: str | None = None, fusion: str = "attention", dim: int = 32,
                 encoder_hidden: Sequence[int] = (64,), head_hidden: Sequence[int] = (), modality_dropout: float = 0.3,
                 members: int = 5, epochs: int = 60, batch_size: int = 128, lr: float = 3e-3,
                 weight_decay: float = 1e-4, loss: str | None = None, target_transform: str | None = None,
                 baseline: str | None = None, coverage: Sequence[float] = (0.8, 0.9), min_calibration: int = 30,
                 adapt_steps: int = 5, adapt_lr: float = 0.05, seed: int = 0,
                 image_encoders: Mapping[str, Any] | None = None) -> None:
        if task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
        if target_transform not in TRANSFORMS or (target_transform and task != "regression"):
            raise ValueError(f"target_transform must be one of {list(TRANSFORMS)} (regression only)")
        if members < 1 or not 0 <= modality_dropout < 1:
            raise ValueError("need members >= 1 and 0 <= modality_dropout < 1")
        self.modalities = [Modality.from_dict(m) for m in modalities]
        self.task, self.target, self.unit, self.fusion, self.dim = task, target, unit, fusion, dim
        self.encoder_hidden, self.head_hidden = list(encoder_hidden), list(head_hidden)
        self.modality_dropout, self.members, self.epochs = modality_dropout, members, epochs
        self.batch_size = batch_size
        self.lr, self.weight_decay, self.target_transform = lr, weight_decay, target_transform
        self.baseline = baseline
        self.loss = loss or ("cross_entropy" if task == "classification" else "huber")
        resolve_loss(self.loss)
        self.coverage, self.min_calibration = list(coverage), min_calibration
        self.adapt_steps, self.adapt_lr, self.seed = adapt_steps, adapt_lr, seed
        self.image_encoders = dict(image_encoders or {})
        if baseline and task != "regression":
            raise ValueError("a baseline is for regression")
        self.target_mean_, self.target_scale_ = 0.0, 1.0
        self._network(0)  # fail early on bad settings

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` settings (JSON-ready; the image encoders are not among them)."""
        keys = ("task", "target", "unit", "fusion", "dim", "encoder_hidden", "head_hidden", "modality_dropout",
                "members", "epochs", "batch_size", "lr", "weight_decay", "loss", "target_transform", "baseline",
                "coverage", "min_calibration", "adapt_steps", "adapt_lr", "seed")
        return {"modalities": [m.to_dict() for m in self.modalities], **{k: getattr(self, k) for k in keys}}

    # -- targets ---------------------------------------------------------------------------------------
    def _encode_y(self, y: Any) -> torch.Tensor:
        y = np.asarray(y)
        if self.task == "classification":
            index = {c: i for i, c in enumerate(self.classes_)}
            unknown = sorted({str(v) for v in y if v not in index})
            if unknown:
                raise DataError(f"labels not seen in training: {unknown[:5]}", field=self.target)
            return torch.as_tensor([index[v] for v in y], dtype=torch.long)
        forward = TRANSFORMS[self.target_transform][0]
        with np.errstate(all="ignore"):
            t = forward(y.astype(float))
        return torch.as_tensor((t - self.target_mean_) / self.target_scale_, dtype=torch.float32)[:, None]

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return TRANSFORMS[self.target_transform][1](z * self.target_scale_ + self.target_mean_)

    def _check_y(self, x: Multimodal, y: Any) -> np.ndarray:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"{len(x)} patients but {len(y)} targets")
        if self.task == "regression":
            y = y.astype(float)
            bad = ~np.isfinite(y) | ((y <= 0) if self.target_transform == "log" else
                                     (y < 0) if self.target_transform == "sqrt" else False)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"{int(bad.sum())} targets are missing or out of range for "
                                f"target_transform={self.target_transform!r} (first: {y[i]})",
                                record_id=str(x.ids[i]), field=self.target)
        return y

    # -- networks --------------------------------------------------------------------------------------
    def _network(self, seed: int) -> FusionNet:
        torch.manual_seed(seed)
        out = len(getattr(self, "classes_", [0, 1])) if self.task == "classification" else 1
        net = FusionNet(self.modalities, out_features=out, dim=self.dim, fusion=self.fusion,
                        encoder_hidden=self.encoder_hidden, head_hidden=self.head_hidden,
                        image_encoders=self.image_encoders, baseline=self.baseline,
                        target_transform=self.target_transform)
        if self.baseline:
            net.target_mean.fill_(self.target_mean_)
            net.target_scale.fill_(self.target_scale_)
        return net

    def _usable(self, x: Multimodal, *, training: bool = False) -> np.ndarray:
        """Rows with at least one of the model's modalities; outside training, none missing all is allowed."""
        has = x.present(self.names).any(1)
        if not training and not has.all():
            ids = [str(i) for i in x.ids[~has][:5]]
            raise DataError(f"{int((~has).sum())} patients have none of the model's modalities {self.names} "
                            f"(first: {ids}); at least one is needed", record_id=ids[0], field="modalities")
        return has

    def _train(self, net: FusionNet, x: Multimodal, y: torch.Tensor, seed: int) -> list[float]:
        packed = net.pack(x)
        present = x.present(self.names)
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        loss_fn = resolve_loss(self.loss)
        optimiser = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = max(1, -(-len(x) // self.batch_size))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=self.epochs * steps_per_epoch)
        losses = []
        net.train()
        for _ in range(self.epochs):
            packed[:, -len(self.names):] = torch.as_tensor(modality_dropout(present, self.modality_dropout, rng))
            order = torch.randperm(len(x), generator=generator)
            total = 0.0
            for batch in order.split(self.batch_size):
                loss = loss_fn(net(packed[batch]), y[batch]).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(batch)
            losses.append(total / len(x))
        net.eval()
        return losses

    # -- training --------------------------------------------------------------------------------------
    def fit(self, x: Multimodal, y: Any) -> FusionModel:
        """Train the members on the patients of ``x`` (rows with no modality at all are skipped and counted)."""
        start = time.monotonic()
        y = self._check_y(x, y)
        usable = self._usable(x, training=True)
        x, y = x[usable], y[usable]
        if len(x) < 2 * self.members:
            raise DataError(f"{len(x)} usable patients; need at least {2 * self.members} for {self.members} members",
                            field="modalities")
        if self.task == "classification":
            self.classes_ = sorted(set(y.tolist()), key=str)
        else:
            t = TRANSFORMS[self.target_transform][0](y)
            self.target_mean_, self.target_scale_ = float(t.mean()), float(t.std() or 1.0)
        yt = self._encode_y(y)
        fold = np.random.default_rng(self.seed).permutation(len(x)) % self.members
        self.members_: list[FusionNet] = []
        self.inner_lrs_: list[dict[str, torch.Tensor]] | None = None
        losses = []
        for m in range(self.members):
            train = fold != m if self.members > 1 else np.ones(len(x), dtype=bool)
            net = self._network(self.seed * 1000 + m)
            net.fit_scaling(x[train])
            losses.append(self._train(net, x[train], yt[torch.as_tensor(train)], seed=self.seed * 1000 + m)[-1])
            self.members_.append(net)
        self.calibration_ = self._calibrate(x, yt, fold) if self.members > 1 else {}
        self.training_ = {"patients": len(x), "skipped_without_modalities": int((~usable).sum()),
                          "modalities_present": {n: int(x.mask[n].sum()) if n in x.mask else 0 for n in self.names},
                          "final_train_loss": round(float(np.mean(losses)), 6)}
        self.fit_seconds_ = time.monotonic() - start
        return self

    def subsets(self) -> list[tuple[str, ...]]:
        """Every non-empty set of the model's modalities."""
        return [s for r in range(1, len(self.names) + 1) for s in itertools.combinations(self.names, r)]

    def _masked(self, packed: torch.Tensor, keep: Sequence[str]) -> torch.Tensor:
        out = packed.clone()
        out[:, -len(self.names):] *= torch.as_tensor([float(n in keep) for n in self.names])
        return out

    def _calibrate(self, x: Multimodal, yt: torch.Tensor, fold: np.ndarray) -> dict[str, Any]:
        """Out-of-fold residuals of every set of modalities the patients have -> conformal bounds per set."""
        present = x.present(self.names)
        residuals: dict[str, list[np.ndarray]] = {}
        for m, net in enumerate(self.members_):
            rows = np.flatnonzero(fold == m)
            packed = net.pack(x[rows])
            for subset in self.subsets():
                cols = [self.names.index(n) for n in subset]
                has = present[rows][:, cols].all(1)
                if not has.any():
                    continue
                with torch.no_grad():
                    pred = net(self._masked(packed[torch.as_tensor(has)], subset))
                target = yt[torch.as_tensor(rows[has])]
                if self.task == "regression":  # in units of the (transformed) target
                    residual = (target - pred).numpy()[:, 0] * self.target_scale_
                    residuals.setdefault(subset_key(subset), []).append(residual)
        out = {}
        for key, parts in residuals.items():
            r = np.concatenate(parts)
            entry: dict[str, Any] = {"n": len(r)}
            if len(r) >= self.min_calibration:
                entry.update({str(c): conformal_bounds(r, c) for c in self.coverage})
            out[key] = entry
        return out

    # -- prediction ------------------------------------------------------------------------------------
    def _check(self) -> None:
        if not hasattr(self, "members_"):
            raise RuntimeError("the model is not trained: call fit() or load it")

    def _restrict(self, x: Multimodal, modalities: Sequence[str] | None) -> Multimodal:
        if modalities is None:
            return x
        unknown = sorted(set(modalities) - set(self.names))
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; the model has {self.names}")
        return x.only(*[n for n in modalities if n in x.names])

    def _outputs(self, x: Multimodal, nets: Sequence[Any]) -> np.ndarray:
        """``(members, N, out)`` network outputs (standardised target, or logits)."""
        packed = self.members_[0].pack(x)
        with torch.no_grad():
            return np.stack([net(packed).numpy() for net in nets])

    def _predict(self, x: Multimodal, nets: Sequence[Any]) -> np.ndarray:
        out = self._outputs(x, nets)
        if self.task == "classification":
            return np.asarray(self.classes_, dtype=object)[self._proba(out).argmax(1)]
        return self._decode(out.mean(0)[:, 0])

    def _proba(self, out: np.ndarray) -> np.ndarray:
        logits = torch.as_tensor(out)
        return logits.softmax(-1).mean(0).numpy()

    def predict(self, x: Multimodal, *, modalities: Sequence[str] | None = None) -> np.ndarray:
        """Predictions from the modalities each patient has (or only those in ``modalities``)."""
        self._check()
        x = self._restrict(x, modalities)
        self._usable(x)
        return self._predict(x, self.members_)

    def predict_proba(self, x: Multimodal, *, modalities: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities ``(N, classes)`` (columns in the order of ``classes_``)."""
        self._check()
        if self.task != "classification":
            raise ValueError("predict_proba needs task='classification'")
        x = self._restrict(x, modalities)
        self._usable(x)
        return self._proba(self._outputs(x, self.members_))

    def predict_interval(self, x: Multimodal, *, modalities: Sequence[str] | None = None
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{coverage: (low, high)}`` per patient, calibrated on the set of modalities the patient used.

        NaN where that set had fewer than ``min_calibration`` calibration patients.
        """
        self._check()
        if self.task != "regression":
            raise ValueError("prediction intervals are for regression")
        x = self._restrict(x, modalities)
        self._usable(x)
        z = self._outputs(x, self.members_).mean(0)[:, 0]
        keys = [subset_key(u) for u in x.used(self.names)]
        out = {}
        for c in self.coverage:
            bounds = np.array([self.calibration_.get(k, {}).get(str(c), [np.nan, np.nan]) for k in keys],
                              dtype=float).reshape(-1, 2)
            bounds /= self.target_scale_
            out[str(c)] = (self._decode(z + bounds[:, 0]), self._decode(z + bounds[:, 1]))
        return out

    def modality_weights(self, x: Multimodal) -> pd.DataFrame:
        """Each modality's weight in the fusion per patient (mean over members; 0 for a missing modality)."""
        self._check()
        self._usable(x)
        packed = self.members_[0].pack(x)
        with torch.no_grad():
            w = np.mean([net.fuse(packed)[1].numpy() for net in self.members_], axis=0)
        return pd.DataFrame(w, columns=self.names, index=x.ids)

    def transform(self, x: Multimodal) -> np.ndarray:
        """The fused representation ``(N, members x dim)``: the members' representations side by side."""
        self._check()
        self._usable(x)
        packed = self.members_[0].pack(x)
        with torch.no_grad():
            return np.concatenate([net.embed(packed).numpy() for net in self.members_], axis=1)

    # -- adaptation (MAML family) ----------------------------------------------------------------------
    def _lrs(self, m: int) -> dict[str, torch.Tensor]:
        if self.inner_lrs_ is not None:
            return self.inner_lrs_[m]
        return {n: torch.tensor(self.adapt_lr) for n, _ in self.members_[m].named_parameters() if n.startswith(HEAD)}

    def adapt(self, support: Multimodal, y: Any, *, steps: int | None = None) -> AdaptedFusionModel:
        """The model with each member's prediction head adapted on ``support`` (``steps`` gradient steps)."""
        self._check()
        y = self._check_y(support, y)
        self._usable(support)
        steps = self.adapt_steps if steps is None else steps
        nets = []
        for m, net in enumerate(self.members_):
            params = {n: p.detach() for n, p in net.named_parameters()}
            buffers = {n: b for n, b in net.named_buffers()}
            if len(support) and steps:
                params = inner_adapt(net, params, self._lrs(m), net.pack(support), self._encode_y(y),
                                     loss=self.loss, steps=steps, first_order=True, buffers=buffers)
            nets.append(_Functional(net, {n: p.detach() for n, p in params.items()}, buffers))
        return AdaptedFusionModel(self, nets, len(support))

    def meta_fit(self, tasks: Sequence[Task], *, meta_steps: int = 300, meta_batch_size: int = 16,
                 meta_lr: float = 1e-3, first_order: bool = False) -> FusionModel:
        """Meta-train the fitted members with MAML over multimodal tasks, adapting only the heads (ANIL).

        ``tasks`` have :class:`Multimodal` support and query sets (for example one task per patient); the
        members' networks are refined in place and their head learning rates learned (Meta-SGD). The
        networks change after their intervals were calibrated, so a meta-trained model has no intervals.
        """
        self._check()
        if not tasks:
            raise ValueError("no tasks")
        self.inner_lrs_ = []
        for m, net in enumerate(self.members_):
            maml = MAML(net, loss=self.loss, inner_steps=self.adapt_steps, inner_lr=self.adapt_lr, adapt=[HEAD],
                        first_order=first_order, meta_lr=meta_lr, meta_batch_size=meta_batch_size,
                        max_steps=meta_steps, weight_decay=self.weight_decay, seed=self.seed * 1000 + m)
            maml.meta_fit(self._packed_tasks(tasks, seed=self.seed * 1000 + m), show_progress=False)
            net.eval()
            self.inner_lrs_.append(maml.lrs())
        self.calibration_ = {}
        self.training_["meta"] = {"tasks": len(tasks), "meta_steps": meta_steps, "first_order": first_order}
        return self

    def _packed_tasks(self, tasks: Sequence[Task], seed: int):
        """Endless tasks with packed inputs, encoded targets and fresh modality dropout."""
        rng = np.random.default_rng(seed)
        net = self.members_[0]
        while True:
            t = tasks[int(rng.integers(len(tasks)))]
            sx, qx = net.pack(t.support_x), net.pack(t.query_x)
            for packed, x in ((sx, t.support_x), (qx, t.query_x)):
                mask = modality_dropout(x.present(self.names), self.modality_dropout, rng)
                packed[:, -len(self.names):] = torch.as_tensor(mask)
            yield Task(sx, self._encode_y(t.support_y), qx, self._encode_y(t.query_y))

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, directory: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """``config.json`` (settings, target scaling, calibration, training summary) and ``model.safetensors``."""
        self._check()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"member{i}.{k}": v.detach().contiguous()
                   for i, net in enumerate(self.members_) for k, v in net.state_dict().items()}
        for i, lrs in enumerate(self.inner_lrs_ or []):
            tensors.update({f"member{i}.inner_lr.{k}": v.contiguous() for k, v in lrs.items()})
        save_file(tensors, directory / "model.safetensors")
        config = {"model": "FusionModel", "medmeta_version": medmeta.__version__, "params": self.get_params(),
                  "classes": getattr(self, "classes_", None),
                  "target_scaling": ({"mean": self.target_mean_, "scale": self.target_scale_}
                                     if self.task == "regression" else None),
                  "meta_trained": self.inner_lrs_ is not None,
                  "calibration": self.calibration_, "training": self.training_, **(extra or {})}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, image_encoders: Mapping[str, Any] | None = None) -> FusionModel:
        """Rebuild a model written by :meth:`save` (safetensors: no code is loaded from the files)."""
        directory = Path(directory)
        try:
            config = json.loads((directory / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the model config ({exc})", source=directory / "config.json") from exc
        if config.get("model") != "FusionModel":
            raise DataError(f"not a fusion model ({config.get('model')!r})", source=directory / "config.json")
        model = cls(**config["params"], image_encoders=image_encoders)
        if config.get("classes") is not None:
            model.classes_ = config["classes"]
        if config.get("target_scaling"):
            scaling = config["target_scaling"]
            model.target_mean_, model.target_scale_ = scaling["mean"], scaling["scale"]
        model.calibration_, model.training_ = config["calibration"], config["training"]
        tensors = load_file(directory / "model.safetensors")
        model.members_, lrs = [], []
        for i in range(model.members):
            net = model._network(i)
            prefix = f"member{i}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            lrs.append({k[len("inner_lr."):]: v for k, v in state.items() if k.startswith("inner_lr.")})
            net.load_state_dict({k: v for k, v in state.items() if not k.startswith("inner_lr.")})
            model.members_.append(net.eval())
        model.inner_lrs_ = lrs if config.get("meta_trained") else None
        return model


class _Functional:
    """A network called with given parameters (an adapted member)."""

    def __init__(self, net: FusionNet, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> None:
        self.net, self.params, self.buffers = net, params, buffers

    def __call__(self, packed: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.net, (self.params, self.buffers), (packed,))


class AdaptedFusionModel:
    """A :class:`FusionModel` with its heads adapted to one task: ``predict`` / ``predict_proba``."""

    def __init__(self, model: FusionModel, nets: list[_Functional], n_support: int) -> None:
        self.model, self.nets, self.n_support = model, nets, n_support

    def predict(self, x: Multimodal, *, modalities: Sequence[str] | None = None) -> np.ndarray:
        x = self.model._restrict(x, modalities)
        self.model._usable(x)
        return self.model._predict(x, self.nets)

    def predict_proba(self, x: Multimodal, *, modalities: Sequence[str] | None = None) -> np.ndarray:
        if self.model.task != "classification":
            raise ValueError("predict_proba needs task='classification'")
        x = self.model._restrict(x, modalities)
        self.model._usable(x)
        return self.model._proba(self.model._outputs(x, self.nets))

