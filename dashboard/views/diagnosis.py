"""Diagnosis: a few-shot bundle's suggestion for an image, with the stored cases it resembles as evidence.

The support memory the suggestion comes from lives under ``MEDMETA_HOME`` (one per bundle); a
clinician can add a class, or more cases of a class, from a few images, and the next diagnosis
uses them. Also the bundles' cards for the Models page (:func:`bundle_cards`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from medmeta.dashboard import data
from medmeta.dashboard.context import Context
from medmeta.dashboard.review import review
from medmeta.errors import DataError, MedmetaError

log = logging.getLogger("medmeta.dashboard")

SOURCES = ("Sample image", "This patient's images", "Upload")
UPLOAD_TYPES = ["png", "jpg", "jpeg", "dcm", "npz"]
TOP_K = 5
#: The rows of ``benchmarks/results/fewshot_protocol.json`` that belong to each bundle.
PROTOCOL_METHODS = {"fewshot_protonet_classification": "medmeta Prototypical (bundle)",
                    "fewshot_matching_classification": "medmeta Matching+FCE (bundle)"}


def render(ctx: Context) -> None:
    st.header("Diagnosis")
    st.caption("Few-shot image classification: a suggestion with its probabilities and the most similar stored "
               "cases as evidence, for review by a clinician. Decision support, never a diagnosis.")
    folders = data.bundles(ctx.settings.bundles)
    if not folders:
        st.warning(f"No few-shot bundles found in {ctx.settings.bundles} (set MEDMETA_BUNDLES).")
        return
    bundle = st.radio("Few-shot bundle", folders, format_func=lambda p: p.name, horizontal=True, key="dx-bundle")
    try:
        memory = data.support_memory(str(bundle), str(ctx.settings.home))
    except MedmetaError as exc:
        st.error(f"The support memory of {bundle.name} cannot be opened: {exc}")
        return
    chosen = _choose_image(ctx, bundle)
    if chosen is not None:
        image, origin = chosen
        _diagnose(ctx, bundle, memory, image, origin)
    st.divider()
    _teach(ctx, memory)


def _choose_image(ctx: Context, bundle: Path) -> tuple[np.ndarray, str] | None:
    """The image to diagnose and where it came from (no file names: they may name the patient)."""
    source = st.radio("Image", SOURCES, horizontal=True, key="dx-source")
    if source == "Sample image":
        samples = sorted((bundle / "sample_images").glob("*.png"))
        if not samples:
            st.info("This bundle ships no sample images.")
            return None
        path = st.selectbox("Sample image", samples, format_func=lambda p: p.stem, key="dx-sample")
        return _read(path.read_bytes(), path.name)[0], f"sample:{path.name}"
    if source == "This patient's images":
        from medmeta.fhir.media import decode_image

        images = ctx.tables.images
        rows = images[images["patient_id"].astype(str) == str(ctx.patient)].reset_index(drop=True)
        if rows.empty:
            st.info("No images (FHIR Media) on this patient's record.")
            return None
        i = st.selectbox("Image on record", range(len(rows)), key="dx-media",
                         format_func=lambda i: " · ".join(str(v) for v in rows.loc[i, ["time", "modality", "title"]]
                                                          if pd.notna(v) and str(v)) or f"image {i + 1}")
        base = Path(ctx.settings.source) if ctx.settings.source and Path(ctx.settings.source).exists() else None
        try:
            return decode_image(rows.loc[i].to_dict(), base.parent if base and base.is_file() else base), \
                f"Media/{rows.loc[i, 'media_id']}"
        except DataError as exc:
            st.error(f"This image cannot be read: {exc}")
            return None
    upload = st.file_uploader("PNG, JPEG, DICOM, or an NPZ of image slices", type=UPLOAD_TYPES, key="dx-upload")
    if upload is None:
        return None
    raw = upload.getvalue()
    try:
        images = _read(raw, upload.name)
    except DataError as exc:
        st.error(f"This file cannot be read: {exc}")
        return None
    index = 0
    if len(images) > 1:
        index = st.number_input(f"Slice (0–{len(images) - 1})", 0, len(images) - 1, 0, key="dx-slice")
    return images[int(index)], f"upload sha256:{hashlib.sha256(raw).hexdigest()[:12]}#{int(index)}"


def _read(raw: bytes, name: str) -> list[np.ndarray]:
    """uint8 images of an uploaded file: one for PNG/JPEG/DICOM, every slice of an NPZ's image array."""
    from medmeta.fhir.media import decode_bytes

    if not name.lower().endswith(".npz"):
        return [decode_bytes(raw, None)]
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise DataError(f"not a readable .npz file ({exc})", source=name) from exc
    key = next((k for k in arrays if k.endswith("images")), None) or next(
        (k for k, a in arrays.items() if a.ndim in (2, 3, 4)), None)
    if key is None:
        raise DataError("no image array (2-D image or stack of slices)", source=name)
    a = arrays[key]
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3):
        a = a[None]
    if not (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] in (1, 3))) or len(a) == 0:
        raise DataError(f"expected slices (N, H, W) or (N, H, W, 1|3), found {a.shape}", source=name, field=key)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        low, high = float(a.min()), float(a.max())
        a = np.round(255 * (a - low) / (high - low or 1.0)).astype(np.uint8)
    return list(a[..., 0] if a.ndim == 4 and a.shape[-1] == 1 else a)


def _shown(image: np.ndarray, size: int = 112) -> np.ndarray:
    """An image enlarged without smoothing, so that small (28×28) images stay legible."""
    im = Image.fromarray(image)
    scale = max(1, size // max(im.size))
    return np.asarray(im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST))


def _diagnose(ctx: Context, bundle: Path, memory, image: np.ndarray, origin: str) -> None:
    left, right = st.columns([1, 3])
    left.image(_shown(image, 196), caption=f"{origin} · {image.shape[1]}×{image.shape[0]}")
    digest = hashlib.sha256(image.tobytes()).hexdigest()[:12]
    current = (bundle.name, digest, memory.version)
    if right.button("Diagnose", type="primary", key="dx-run"):
        st.session_state["dx-result"] = (current, memory.predict(image[None], top_k=TOP_K)[0])
        log.info("diagnosis with %s (memory version %d)", bundle.name, memory.version)
    result = st.session_state.get("dx-result")
    if result is None or result[0] != current:
        right.info("Press Diagnose to classify this image with the support memory as it stands now "
                   f"(version {memory.version}: {len(memory.classes)} classes, {len(memory)} cases).")
        return
    p = result[1]
    probability = p.probabilities[p.predicted]
    right.metric("Suggested class", p.predicted, help="the class with the highest probability")
    right.progress(probability, text=f"probability {probability:.0%} over the {len(p.probabilities)} classes "
                                     f"in memory version {p.memory_version}")
    frame = (pd.DataFrame({"class": list(p.probabilities), "probability": list(p.probabilities.values())})
             .nlargest(10, "probability"))
    right.altair_chart(alt.Chart(frame).mark_bar().encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("class:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320)),
        tooltip=["class", alt.Tooltip("probability:Q", format=".1%")],
        color=alt.condition(alt.datum["class"] == p.predicted, alt.value("#4c78a8"), alt.value("#9ecae9")),
    ).properties(title="Class probabilities (the 10 highest)", height=alt.Step(22)), width="stretch")
    st.subheader("Evidence: the most similar stored cases")
    stored = memory.images([e.case_id for e in p.evidence])
    for col, e, picture in zip(st.columns(len(p.evidence)), p.evidence, stored, strict=True):
        col.image(_shown(picture), caption=f"{e.label} · similarity {e.similarity:.2f}")
        col.caption(f"case {e.case_id} · {e.source_id or 'no source id'}")
    st.caption(p.disclaimer)
    meta = _metadata(bundle)
    suggestion = {"predicted": p.predicted, "probability": round(probability, 4), "image": origin,
                  "top3": dict(sorted(p.probabilities.items(), key=lambda kv: -kv[1])[:3]),
                  "evidence": [[e.case_id, e.label, round(e.similarity, 4)] for e in p.evidence]}
    review(ctx.audit, user=ctx.user, patient=str(ctx.patient or "unassigned"), kind="diagnosis", model=bundle.name,
           version=f"{meta.get('version', '?')} memory v{p.memory_version} encoder {p.encoder}",
           suggestion=suggestion, hint="e.g. the class you see")


def _teach(ctx: Context, memory) -> None:
    st.subheader("Teach the support memory")
    st.caption(f"Add a new class, or more cases of a class, from a few labelled images (k-shot): the next "
               f"diagnosis uses them, with no retraining. Memory version {memory.version}, kept in "
               f"{memory.directory}.")
    with st.expander(f"{len(memory.classes)} classes, {len(memory)} cases"):
        st.dataframe(pd.DataFrame({"class": list(memory.classes), "cases": list(memory.classes.values())}),
                     hide_index=True, width="stretch")
    if done := st.session_state.pop("teach-done", None):
        st.success(done)
    existing = list(memory.classes)
    choice = st.selectbox("Class", ["New class…", *existing], key="teach-class")
    label = st.text_input("New class name", key="teach-new").strip() if choice == "New class…" else choice
    files = st.file_uploader("Images of this class (PNG, JPEG, DICOM; one case each)", type=UPLOAD_TYPES[:-1],
                             accept_multiple_files=True, key="teach-files")
    if not ctx.user:
        st.info("Enter your name in the sidebar to add cases.")
    if st.button("Add to the support memory", key="teach-add", disabled=not ctx.user):
        if not label or not files:
            st.error("Name the class and choose its images.")
            return
        try:
            images = [_read(f.getvalue(), f.name)[0] for f in files]
        except DataError as exc:
            st.error(f"Nothing added: {exc}")
            return
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        for index in groups.values():  # one update per image size (a memory segment holds one size)
            version = memory.add(np.stack([images[i] for i in index]), label,
                                 [f"upload sha256:{hashlib.sha256(files[i].getvalue()).hexdigest()[:12]}"
                                  for i in index], note=f"added in the dashboard by {ctx.user}")
        log.info("support memory: %d case(s) added to one class, now version %d", len(images), version)
        st.session_state["teach-done"] = (f"Added {len(images)} case(s) of {label!r}: memory version {version}. "
                                          "Press Diagnose to use them.")
        st.rerun()


def _metadata(bundle: Path) -> dict:
    from medmeta.bundle import read_metadata

    return read_metadata(bundle)


def bundle_cards(ctx: Context) -> None:
    """Each bundle's metadata, training record and evaluation tables with their CIs (for the Models page)."""
    folders = data.bundles(ctx.settings.bundles)
    if not folders:
        st.info(f"No few-shot bundles found in {ctx.settings.bundles} (set MEDMETA_BUNDLES).")
        return
    results = ctx.settings.bundles.parent / "benchmarks" / "results"
    protocol = results / "fewshot_protocol.json"
    report = json.loads(protocol.read_text()) if protocol.is_file() else None
    for bundle in folders:
        meta = _metadata(bundle)
        with st.container(border=True):
            st.markdown(f"**{meta.get('name', bundle.name)}** · version {meta.get('version', '?')} · `{bundle.name}`")
            st.write(meta.get("description", ""))
            classes = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
            st.caption(f"Task: {meta.get('task', '?')}  \nIntended use: {meta.get('intended_use', '?')}  \n"
                       f"Shipped support set: {len(classes)} classes · Data: {meta.get('data_source', '?')}")
            training = bundle / "models" / "training.json"
            if training.is_file():
                t = json.loads(training.read_text())
                st.caption(f"Trained: {t.get('learner')} in {t.get('seconds', '?')} s on "
                           f"{t.get('data', {}).get('meta_train_images', '?')} images; encoder "
                           f"{t.get('encoder_fingerprint', '?')}")
            rows = _evaluation(bundle, report)
            if rows is None:
                st.warning("Evaluation: not yet measured (run `python benchmarks/fewshot_protocol.py`, or the "
                           "bundle's configs/evaluate.json).")
                continue
            frame, origin = rows
            frame["accuracy (%)"] = (100 * frame["accuracy"]).round(1)
            frame["95% CI (±)"] = (100 * frame["ci95"]).round(1)
            frame["low"], frame["high"] = frame["accuracy"] - frame["ci95"], frame["accuracy"] + frame["ci95"]
            base = alt.Chart(frame).encode(x=alt.X("shots:O"), color=alt.Color("benchmark:N"))
            chart = base.mark_line(point=True).encode(y=alt.Y("accuracy:Q", axis=alt.Axis(format="%"),
                                                               scale=alt.Scale(zero=False))) + base.mark_errorbar(
                ).encode(y="low:Q", y2="high:Q")
            st.altair_chart(chart.properties(title="Few-shot accuracy with its 95% CI", height=260),
                            width="stretch")
            st.dataframe(frame[["benchmark", "ways", "shots", "episodes", "accuracy (%)", "95% CI (±)"]],
                         hide_index=True, width="stretch")
            st.caption(origin)
            calibration_plot(bundle, results / "calibration")


def calibration_plot(bundle: Path, folder: Path) -> None:
    """Reliability diagram: how often the suggested class was right, by its probability (``medmeta fewshot eval``)."""
    frames = []
    for path in sorted(folder.glob(f"{bundle.name}_*.json")):
        r = json.loads(path.read_text())
        name = f"{Path(r['data']).stem} ({r['ways']}-way {r['shots']}-shot, ECE {r['calibration']['ece']:.3f})"
        frames.append(pd.DataFrame(r["calibration"]["bins"]).assign(data=name))
    if not frames:
        st.caption("Calibration: not yet measured (`medmeta fewshot eval --json`, see "
                   "benchmarks/results/calibration/README.md).")
        return
    bins = pd.concat(frames, ignore_index=True)
    diagonal = alt.Chart(pd.DataFrame({"x": [0.5, 1.0]})).mark_line(color="grey", strokeDash=[3, 3]).encode(
        x="x:Q", y="x:Q")
    points = alt.Chart(bins).mark_line(point=True).encode(
        x=alt.X("confidence:Q", title="probability of the suggested class (bin mean)", scale=alt.Scale(zero=False)),
        y=alt.Y("accuracy:Q", title="how often it was right", scale=alt.Scale(zero=False)),
        color=alt.Color("data:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=400)),
        tooltip=["data", "low", "high", "n", alt.Tooltip("confidence:Q", format=".2f"),
                 alt.Tooltip("accuracy:Q", format=".2f")])
    st.altair_chart((diagonal + points).properties(
        title="Calibration on data sets it never saw (on the diagonal: probabilities mean what they say)",
        height=280), width="stretch")
    st.caption("Above the diagonal the suggestion is right more often than its probability says (under-confident); "
               "below it, less often (over-confident). From benchmarks/results/calibration/.")


def _evaluation(bundle: Path, report: dict | None) -> tuple[pd.DataFrame, str] | None:
    """The bundle's few-shot results: from the protocol benchmark, else its own ``eval/metrics.json``."""
    method = PROTOCOL_METHODS.get(bundle.name)
    if report and method:
        rows = [r for r in report.get("results", []) if r.get("method") == method]
        if rows:
            return pd.DataFrame(rows), (f"From benchmarks/results/fewshot_protocol.json: `{report.get('command')}` "
                                        f"({report.get('machine')}); mean accuracy over episodes ± 95% CI.")
    metrics = bundle / "eval" / "metrics.json"
    if metrics.is_file():
        rows = json.loads(metrics.read_text()).get("results", [])
        if rows:
            return pd.DataFrame(rows), f"From {metrics} (the bundle's configs/evaluate.json)."
    return None
