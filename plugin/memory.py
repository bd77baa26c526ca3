"""The support memory: a persistent, versioned store of labelled cases that a few-shot learner predicts from.

A clinician or a script adds a class, or more cases of a class, from a few images; the very
next prediction uses them, with no retraining. Every prediction carries class probabilities,
the predicted class and the most similar stored cases (with their similarity) as evidence.

On disk (one folder)::

    CURRENT                      the committed version number (replaced atomically: the commit point)
    versions/000007.json         manifest of version 7: its segments (with SHA-256), removed cases, change
    segments/<id>.npz            the cases added by one update: images, labels, source ids, case ids
    embeddings/<encoder>/<id>.npy  embeddings of a segment, computed by the encoder with that fingerprint

Segments are never modified. An update writes its new files, then a new manifest, then
replaces ``CURRENT``; each file is written to a temporary name, flushed to disk and renamed
into place, so a crash or a killed writer at any point leaves the last committed version
intact (the unreferenced files it may leave are ignored). Writers take an exclusive lock;
readers need none. Embeddings are a cache keyed by the encoder's fingerprint: opening the
memory with another encoder re-embeds the stored images, so embeddings always come from the
encoder that predicts.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.neighbors import NearestNeighbors

import medmeta
from medmeta.errors import DataError, MedmetaError
from medmeta.imaging import to_tensor
from medmeta.learners.base import FewShotLearner

FORMAT = 1
#: Above this many cases, neighbours are found with a scikit-learn ``NearestNeighbors`` index.
INDEX_THRESHOLD = 4096


class MemoryStoreError(MedmetaError):
    """A support memory that cannot be read or written as asked."""


@dataclass(frozen=True)
class Case:
    """One stored, labelled support case."""

    case_id: str
    label: str
    source_id: str
    added_in: int  # the memory version that added it


@dataclass(frozen=True)
class Evidence:
    """A stored case similar to the query, with its cosine similarity in embedding space."""

    case_id: str
    label: str
    source_id: str
    similarity: float


@dataclass(frozen=True)
class Prediction:
    """What the memory says about one image: decision support, not a diagnosis."""

    probabilities: dict[str, float]
    predicted: str
    evidence: tuple[Evidence, ...]
    memory_version: int
    encoder: str
    disclaimer: str = field(default=medmeta.DISCLAIMER)

    def to_dict(self) -> dict:
        return asdict(self)


def fingerprint(learner: FewShotLearner) -> str:
    """A short hash of the learner's class and weights (its support buffers excluded)."""
    h = hashlib.sha256(type(learner).__name__.encode())
    for name, value in sorted(learner.state_dict().items()):
        if name in learner.support_buffers:
            continue
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _check_images(images: np.ndarray, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"expected uint8 pixels, found {images.dtype}", field=what)
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))):
        raise DataError(f"expected a batch of shape (N, H, W) or (N, H, W, 1|3), found {images.shape}", field=what)
    if len(images) == 0:
        raise DataError("no images", field=what)
    return images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images


class _State:
    """Everything a prediction needs for one version, computed once and cached."""

    def __init__(self, version: int, cases: list[Case], embeddings: torch.Tensor, classes: list[str],
                 head: dict[str, torch.Tensor] | None) -> None:
        self.version, self.cases, self.classes, self.head = version, cases, classes, head
        self.embeddings = embeddings
        self.unit = F.normalize(embeddings, dim=1).numpy() if len(cases) else np.empty((0, 0), np.float32)
        self.index = (NearestNeighbors(metric="euclidean").fit(self.unit)  # on unit vectors: cosine order
                      if len(cases) > INDEX_THRESHOLD else None)

    def neighbours(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and cosine similarities of the ``k`` stored cases nearest each (unit) query."""
        k = min(k, len(self.cases))
        if self.index is not None:
            distance, idx = self.index.kneighbors(queries, n_neighbors=k)
            return idx, np.clip(1 - distance**2 / 2, -1, 1)
        sims = queries @ self.unit.T
        idx = np.argsort(-sims, axis=1)[:, :k]
        return idx, np.clip(np.take_along_axis(sims, idx, axis=1), -1, 1)


class SupportMemory:
    """A persistent, versioned store of labelled support cases, and predictions from it.

    ``SupportMemory(directory, learner)`` opens the memory in ``directory`` (creating an empty
    one) for predictions with ``learner``. ``version=`` opens an earlier version, read-only
    (to audit what an earlier prediction was based on).
    """

    def __init__(self, directory: str | Path, learner: FewShotLearner, *, version: int | None = None) -> None:
        self.directory = Path(directory)
        self.learner = learner.eval()
        self.encoder = fingerprint(learner)
        self._pinned = version
        self._state: _State | None = None
        if version is None and not (self.directory / "CURRENT").exists():
            with self._lock():
                if not (self.directory / "CURRENT").exists():
                    self._commit({"format": FORMAT, "version": 0, "parent": None, "created": _now(),
                                  "change": {"op": "create"}, "segments": [], "removed": []})
        if version is not None and not self._manifest_path(version).exists():
            raise MemoryStoreError(f"{self.directory}: no version {version} (latest is {self._current()})")

    # -- reading --------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The version this memory reads (the latest committed one unless pinned)."""
        return self._pinned if self._pinned is not None else self._current()

    @property
    def cases(self) -> list[Case]:
        return list(self._load().cases)

    @property
    def classes(self) -> dict[str, int]:
        """Number of stored cases of each class."""
        labels = [c.label for c in self._load().cases]
        return {c: labels.count(c) for c in sorted(set(labels))}

    def __len__(self) -> int:
        return len(self._load().cases)

    def manifest(self, version: int | None = None) -> dict:
        """The manifest of a version: its segments, removed cases and the change that made it."""
        v = self.version if version is None else version
        return json.loads(self._manifest_path(v).read_text())

    def history(self) -> list[dict]:
        """Every committed version with the change that made it, oldest first."""
        out = []
        for v in range(self.version + 1):
            m = self.manifest(v)
            out.append({"version": v, "created": m["created"], "change": m["change"]})
        return out

    def images(self, case_ids: Sequence[str]) -> list[np.ndarray]:
        """The stored images of some cases (for showing evidence), in the order asked."""
        wanted = set(case_ids)
        found: dict[str, np.ndarray] = {}
        for seg in self.manifest()["segments"]:
            data = self._segment(seg)
            for cid, image in zip(data["case_ids"].tolist(), data["images"], strict=True):
                if cid in wanted:
                    found[cid] = image
        missing = [c for c in case_ids if c not in found]
        if missing:
            raise KeyError(f"no such cases in version {self.version}: {missing[:5]}")
        return [found[c] for c in case_ids]

    def support_set(self) -> tuple[torch.Tensor, np.ndarray, list[str]]:
        """The stored cases as the learner's input: images ``(N, C, H, W)``, class numbers, class names."""
        cases, _, images = self._read(self.manifest(), images=True)
        classes = sorted({c.label for c in cases})
        x = [to_tensor(i, self.learner.in_channels, self.learner.image_size) for i in images if len(i)]
        y = np.asarray([classes.index(c.label) for c in cases], dtype=np.int64)
        empty = torch.empty(0, self.learner.in_channels, self.learner.image_size, self.learner.image_size)
        return (torch.cat(x) if x else empty), y, classes

    # -- writing --------------------------------------------------------------------------------
    def add(self, images: np.ndarray, label: str, source_ids: Sequence[str] | None = None, *,
            note: str = "") -> int:
        """Store cases of class ``label`` (uint8 images ``(N, H, W)`` or ``(N, H, W, C)``).

        ``source_ids`` trace each image to its origin (a file name, a DICOM instance UID).
        Returns the new version; the next prediction uses the new cases.
        """
        images = _check_images(images, "images")
        label = str(label).strip()
        if not label:
            raise DataError("empty class label", field="label")
        sources = [str(s) for s in source_ids] if source_ids is not None else [""] * len(images)
        if len(sources) != len(images):
            raise DataError(f"{len(sources)} source ids for {len(images)} images", field="source_ids")
        with self._lock():
            base = self._writable_base()
            version = base["version"] + 1
            case_ids = [f"c{version:06d}-{i:05d}" for i in range(len(images))]
            segment = uuid.uuid4().hex[:16]
            payload = _npz_bytes(images=images, labels=np.asarray([label] * len(images)),
                                 source_ids=np.asarray(sources), case_ids=np.asarray(case_ids))
            atomic_write(self.directory / "segments" / f"{segment}.npz", payload)
            entry = {"id": segment, "sha256": hashlib.sha256(payload).hexdigest(), "cases": len(images),
                     "version": version}
            self._embeddings(entry, images)  # computed now, so the next prediction is quick
            self._commit({**base, "version": version, "parent": base["version"], "created": _now(),
                          "change": {"op": "add", "label": label, "cases": len(images), "note": note},
                          "segments": [*base["segments"], entry]})
        return version

    def remove(self, case_ids: Sequence[str] = (), *, label: str | None = None, note: str = "") -> int:
        """Retire cases (by id, or every case of ``label``); earlier versions keep them. Returns the new version."""
        with self._lock():
            base = self._writable_base()
            present = {c.case_id: c for c in self._read(base)[0]}
            retired = set(case_ids) | {c for c, case in present.items() if label is not None and case.label == label}
            unknown = sorted(retired - present.keys())
            if unknown or not retired:
                raise MemoryStoreError(f"nothing to remove: unknown cases {unknown[:5]}" if unknown
                                   else f"no cases of class {label!r}")
            version = base["version"] + 1
            self._commit({**base, "version": version, "parent": base["version"], "created": _now(),
                          "change": {"op": "remove", "label": label, "cases": len(retired), "note": note},
                          "removed": sorted({*base["removed"], *retired})})
        return version

    # -- predicting -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: np.ndarray, top_k: int = 5) -> list[Prediction]:
        """Class probabilities, predicted class and the ``top_k`` most similar stored cases, per image."""
        state = self._load()
        if len(state.classes) < 2:
            raise MemoryStoreError(f"{self.directory}: predictions need at least two classes in memory, "
                               f"found {state.classes}")
        images = _check_images(images, "images")
        x = to_tensor(images, self.learner.in_channels, self.learner.image_size)
        if state.head is not None:
            zq = self.learner.embed_images(x)
            proba = self.learner.logits(zq, state.head).softmax(1).numpy()
        else:  # learners that adapt to the support set from images (not from embeddings)
            proba = self.learner(x).softmax(1).numpy()
            zq = self.learner.embed_images(x)
        idx, sims = state.neighbours(F.normalize(zq, dim=1).numpy(), top_k)
        out = []
        for p, row, sim in zip(proba, idx, sims, strict=True):
            evidence = tuple(Evidence(state.cases[i].case_id, state.cases[i].label, state.cases[i].source_id,
                                      float(s)) for i, s in zip(row, sim, strict=True))
            out.append(Prediction({c: float(v) for c, v in zip(state.classes, p, strict=True)},
                                  state.classes[int(p.argmax())], evidence, state.version, self.encoder))
        return out

    # -- internals ------------------------------------------------------------------------------
    def _manifest_path(self, version: int) -> Path:
        return self.directory / "versions" / f"{version:06d}.json"

    def _current(self) -> int:
        try:
            return int((self.directory / "CURRENT").read_text().strip())
        except (OSError, ValueError) as exc:
            raise MemoryStoreError(f"{self.directory}: not a support memory ({exc})") from exc

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _writable_base(self) -> dict:
        if self._pinned is not None:
            raise MemoryStoreError(f"{self.directory}: version {self._pinned} was opened read-only")
        return self.manifest(self._current())

    def _commit(self, manifest: dict) -> None:
        """Write the manifest, then move ``CURRENT`` to it: the single step that makes an update visible."""
        atomic_write(self._manifest_path(manifest["version"]), json.dumps(manifest, indent=1).encode())
        atomic_write(self.directory / "CURRENT", f"{manifest['version']}\n".encode())

    def _segment(self, entry: dict) -> dict[str, np.ndarray]:
        path = self.directory / "segments" / f"{entry['id']}.npz"
        try:
            payload = path.read_bytes()
        except OSError as exc:
            raise MemoryStoreError(f"{path}: segment of version {entry['version']} missing ({exc})") from exc
        if hashlib.sha256(payload).hexdigest() != entry["sha256"]:
            raise MemoryStoreError(f"{path}: contents do not match the manifest's SHA-256 (damaged or altered)")
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def _embeddings(self, entry: dict, images: np.ndarray | None = None) -> np.ndarray:
        """A segment's embeddings by this memory's encoder, from the cache or computed and cached."""
        path = self.directory / "embeddings" / self.encoder / f"{entry['id']}.npy"
        if path.exists():
            z = np.load(path, allow_pickle=False)
            if z.shape[0] == entry["cases"]:
                return z
        if images is None:
            images = self._segment(entry)["images"]
        x = to_tensor(images, self.learner.in_channels, self.learner.image_size)
        z = self.learner.embed_images(x).numpy().astype(np.float32)
        atomic_write(path, _npy_bytes(z))
        return z

    def _read(self, manifest: dict, *, embeddings: bool = False, images: bool = False
              ) -> tuple[list[Case], list[np.ndarray], list[np.ndarray]]:
        """The cases of a version (removed ones left out), with their embeddings and images if asked."""
        removed = set(manifest["removed"])
        cases: list[Case] = []
        z, x = [], []
        for entry in manifest["segments"]:
            data = self._segment(entry)
            keep = ~np.isin(data["case_ids"], list(removed))
            for cid, label, source in zip(data["case_ids"][keep].tolist(), data["labels"][keep].tolist(),
                                          data["source_ids"][keep].tolist(), strict=True):
                cases.append(Case(cid, label, source, entry["version"]))
            if embeddings:
                z.append(self._embeddings(entry, data["images"])[keep])
            if images:
                x.append(data["images"][keep])
        return cases, z, x

    @torch.no_grad()
    def _load(self) -> _State:
        """The state of the version to read; rebuilt only when another version was committed."""
        version = self.version
        if self._state is not None and self._state.version == version:
            return self._state
        learner = self.learner
        cases, blocks, _ = self._read(self.manifest(version), embeddings=True)
        z = torch.from_numpy(np.concatenate(blocks)) if blocks else torch.empty(0, learner.embedding_dim)
        classes = sorted({c.label for c in cases})
        y = torch.as_tensor([classes.index(c.label) for c in cases], dtype=torch.long)
        head = None
        if len(classes) >= 2 and learner.embeds_independently:
            head = learner.support_state(z, y, len(classes))
        elif len(classes) >= 2:  # learners that adapt to the support set from images
            learner.remember(*self.support_set())
        self._state = _State(version, cases, z, classes, head)
        return self._state


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
