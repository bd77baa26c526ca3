"""What a patient's inputs look like: modality specifications and the container of several patients' inputs.

A :class:`Modality` names one kind of input and the shape of its features:

- ``tabular``: a vector of named numbers (EHR features, medications); NaN for an unknown value;
- ``genotype``: one call per marker (``"*1/*3"``, ``"A/G"``) from a fixed list of calls per marker; unknown calls are 0;
- ``series``: ``channels x length`` values, most recent last (laboratory or CGM histories); NaN where nothing was
  measured;
- ``image``: an image tensor ``(channels, height, width)`` for an imaging learner's encoder.

:class:`Multimodal` holds N patients: one array per modality and a boolean **mask** per modality saying who has it.
A missing modality is normal: its mask is False and its array is zeros. It indexes like an array, so a
:class:`~medmeta.tasks.Task` whose ``x`` is a :class:`Multimodal` is a multimodal task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medmeta.errors import DataError

KINDS = ("tabular", "genotype", "series", "image")


@dataclass(frozen=True)
class Modality:
    """One kind of input: its ``name``, ``kind`` (one of :data:`KINDS`) and the shape of its features.

    ``features`` are the feature names (tabular), marker names (genotype) or channel names (series);
    ``categories[i]`` are the calls of marker ``i`` (genotype; call ``j`` is coded ``j + 1``, 0 is unknown);
    ``length`` is the number of time steps (series); ``shape`` is ``(channels, height, width)`` (image).
    """

    name: str
    kind: str
    features: tuple[str, ...] = ()
    categories: tuple[tuple[str, ...], ...] = ()
    length: int = 0
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "categories", tuple(tuple(c) for c in self.categories))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        problem = None
        if self.kind not in KINDS:
            problem = f"kind must be one of {KINDS}, got {self.kind!r}"
        elif self.kind in ("tabular", "genotype", "series") and not self.features:
            problem = f"a {self.kind} modality needs feature names"
        elif self.kind == "genotype" and len(self.categories) != len(self.features):
            problem = f"{len(self.features)} markers but {len(self.categories)} lists of calls"
        elif self.kind == "series" and self.length < 1:
            problem = "a series modality needs length >= 1"
        elif self.kind == "image" and (len(self.shape) < 2 or min(self.shape) < 1):
            problem = f"an image modality needs a shape like (channels, height, width), got {self.shape}"
        if problem:
            raise ValueError(f"modality {self.name!r}: {problem}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one patient's features."""
        if self.kind == "series":
            return (len(self.features), self.length)
        if self.kind == "image":
            return self.shape
        return (len(self.features),)

    @property
    def width(self) -> int:
        return math.prod(self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.features:
            out["features"] = list(self.features)
        if self.categories:
            out["categories"] = [list(c) for c in self.categories]
        if self.length:
            out["length"] = self.length
        if self.shape:
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | Modality) -> Modality:
        return spec if isinstance(spec, Modality) else cls(**spec)

    # -- one patient's raw input -> its array ---------------------------------------------------------
    def encode(self, value: Any, record_id: str | None = None) -> np.ndarray:
        """One patient's input as a float array of :attr:`input_shape` (a clear error names patient and field)."""

        def fail(reason: str, field: str | None = None) -> DataError:
            return DataError(reason, record_id=record_id, field=f"{self.name}.{field}" if field else self.name)

        if self.kind == "genotype":
            return self._encode_genotype(value, fail)
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(self.features))
            if unknown:
                raise fail(f"unknown {'channels' if self.kind == 'series' else 'features'} {unknown[:5]}; "
                           f"expected some of {list(self.features)[:10]}")
            if self.kind == "tabular":
                value = [value.get(f, np.nan) for f in self.features]
            elif self.kind == "series":
                value = np.stack([_right_aligned(value.get(c, ()), self.length) for c in self.features])
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise fail(f"not numeric ({exc})") from None
        if self.kind == "series" and array.ndim == 2 and array.shape[0] == len(self.features):
            array = np.stack([_right_aligned(row, self.length) for row in array])
        if array.shape != self.input_shape:
            raise fail(f"expected shape {self.input_shape}, got {array.shape}")
        if self.kind == "image" and not np.isfinite(array).all():
            raise fail("image has NaN or infinite values")
        return array

    def _encode_genotype(self, value: Any, fail) -> np.ndarray:
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(self.features))
            if unknown:
                raise fail(f"unknown markers {unknown}; expected some of {list(self.features)}")
            value = [value.get(m) for m in self.features]
        calls = list(value)
        if len(calls) != len(self.features):
            raise fail(f"expected {len(self.features)} calls ({list(self.features)}), got {len(calls)}")
        codes = np.zeros(len(calls), dtype=np.float32)
        for i, (marker, call) in enumerate(zip(self.features, calls, strict=True)):
            if call is None or (isinstance(call, float) and math.isnan(call)):
                continue
            if not isinstance(call, str):
                raise fail(f"a call must be text like {self.categories[i][:3]}, got {call!r}", marker)
            if call not in self.categories[i]:
                raise fail(f"unknown call {call!r}; known: {list(self.categories[i])} (or None for unknown)", marker)
            codes[i] = self.categories[i].index(call) + 1
        return codes


def _right_aligned(values: Any, length: int) -> np.ndarray:
    """The last ``length`` values, NaN-padded on the left (most recent last)."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)[-length:]
    return np.concatenate([np.full(length - len(v), np.nan, dtype=np.float32), v])


@dataclass
class Multimodal:
    """N patients' inputs: ``data[name]`` is ``(N, *input_shape)``, ``mask[name]`` is ``(N,)`` bool (has it).

    Rows whose modality is missing hold zeros (never NaN) in that modality's array; values missing
    *inside* a present modality are NaN (tabular, series) or code 0 (genotype). ``ids`` name the patients
    (used in errors and outputs).
    """

    data: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]
    ids: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if set(self.data) != set(self.mask):
            raise ValueError(f"data and mask name different modalities: {sorted(self.data)} vs {sorted(self.mask)}")
        sizes = {len(a) for a in self.data.values()} | {len(m) for m in self.mask.values()}
        n = sizes.pop() if len(sizes) == 1 else None
        if sizes or (n is None and self.data):
            raise ValueError("every modality needs one row per patient")
        n = n or 0
        self.ids = np.arange(n).astype(str) if self.ids is None else np.asarray(self.ids).astype(str)
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} patients")
        for name in self.data:
            mask = np.asarray(self.mask[name], dtype=bool)
            data = np.asarray(self.data[name], dtype=np.float32)
            self.mask[name] = mask
            self.data[name] = np.where(mask.reshape(-1, *([1] * (data.ndim - 1))), data, 0).astype(np.float32)

    @classmethod
    def from_records(cls, modalities: Sequence[Modality], records: Sequence[Mapping[str, Any]],
                     ids: Sequence[Any] | None = None) -> Multimodal:
        """Patients as ``{modality name: features or None}`` dicts; an absent key or None is a missing modality.

        The features of each modality are what :meth:`Modality.encode` accepts (a vector or a
        ``{feature: value}`` dict; ``{marker: call}`` for a genotype; ``channels x time`` for a series).
        """
        ids = [str(i) for i in (ids if ids is not None else range(len(records)))]
        known = {m.name for m in modalities}
        data = {m.name: np.zeros((len(records), *m.input_shape), dtype=np.float32) for m in modalities}
        mask = {m.name: np.zeros(len(records), dtype=bool) for m in modalities}
        for i, (pid, record) in enumerate(zip(ids, records, strict=True)):
            unknown = sorted(set(record) - known)
            if unknown:
                raise DataError(f"unknown modalities {unknown}; this model knows {sorted(known)}", record_id=pid)
            for m in modalities:
                value = record.get(m.name)
                if value is not None:
                    data[m.name][i] = m.encode(value, pid)
                    mask[m.name][i] = True
        return cls(data, mask, np.asarray(ids))

    @classmethod
    def concat(cls, parts: Sequence[Multimodal]) -> Multimodal:
        """The patients of ``parts`` one after the other (the modalities of the first part)."""
        names = parts[0].names
        return cls({n: np.concatenate([p.data[n] for p in parts]) for n in names},
                   {n: np.concatenate([p.mask[n] for p in parts]) for n in names},
                   np.concatenate([p.ids for p in parts]))

    # -- array-like ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: Any) -> Multimodal:
        index = np.asarray(index) if not isinstance(index, slice) else index
        return Multimodal({k: v[index] for k, v in self.data.items()}, {k: v[index] for k, v in self.mask.items()},
                          self.ids[index])

    @property
    def names(self) -> list[str]:
        return list(self.data)

    def present(self, names: Sequence[str] | None = None) -> np.ndarray:
        """``(N, M)`` bool: who has each modality of ``names`` (a modality not held here counts as missing)."""
        names = self.names if names is None else names
        return np.stack([self.mask.get(n, np.zeros(len(self), dtype=bool)) for n in names], axis=1)

    def used(self, names: Sequence[str] | None = None) -> list[list[str]]:
        """The modalities each patient has, in order."""
        names = self.names if names is None else list(names)
        return [[n for n, has in zip(names, row, strict=True) if has] for row in self.present(names)]

    def without(self, *names: str) -> Multimodal:
        """A copy with the modalities ``names`` marked missing for everyone (for example to withhold a genotype)."""
        unknown = sorted(set(names) - set(self.names))
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; have {self.names}")
        return Multimodal(dict(self.data), {k: (np.zeros_like(v) if k in names else v) for k, v in self.mask.items()},
                          self.ids)

    def only(self, *names: str) -> Multimodal:
        """A copy with every modality but ``names`` marked missing."""
        return self.without(*[n for n in self.names if n not in names])


def modality_dropout(mask: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Drop each present modality of each row with probability ``p``, keeping at least one per row.

    ``mask`` is ``(N, M)`` bool; rows that had none keep none. Used in training so that the model
    learns to predict from any subset of modalities.
    """
    if p <= 0:
        return mask
    kept = mask & (rng.random(mask.shape) >= p)
    lost = mask.any(1) & ~kept.any(1)
    for i in np.flatnonzero(lost):  # keep one of the row's modalities, chosen at random
        kept[i, rng.choice(np.flatnonzero(mask[i]))] = True
    return kept
