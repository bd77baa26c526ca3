"""Images in FHIR records (R4 ``Media``): PNG, JPEG or DICOM, inline (base64) or in a local file.

:func:`decode_image` turns a row of :attr:`FhirTables.images` into pixels for the few-shot
models; :func:`media_resource` attaches an image to a patient's record. Remote URLs are not
fetched: a batch job reads what the export holds.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medmeta.errors import DataError
from medmeta.fhir import terminology as t
from medmeta.fhir.writers import validate_r4

PNG, JPEG, DICOM = "image/png", "image/jpeg", "application/dicom"


def _dicom_pixels(data: bytes) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_voi_lut

    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    if pixels.ndim == 3 and pixels.shape[-1] not in (3,):  # a multi-frame series: its middle frame
        pixels = pixels[len(pixels) // 2]
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    low, high = float(pixels.min()), float(pixels.max())
    return np.round(255 * (pixels - low) / (high - low or 1.0)).astype(np.uint8)


def decode_bytes(data: bytes, content_type: str | None) -> np.ndarray:
    """uint8 pixels ``(H, W)`` or ``(H, W, 3)`` of a PNG, JPEG or DICOM file's bytes."""
    if content_type == DICOM or data[128:132] == b"DICM":
        return _dicom_pixels(data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L") if im.mode in ("L", "I", "I;16", "F", "1", "P", "LA") else im.convert("RGB")
            return np.asarray(im)
    except OSError as exc:
        raise DataError(f"not a readable image ({content_type or 'unknown type'}): {exc}") from exc


def decode_image(row: dict[str, Any], base: Path | None = None) -> np.ndarray:
    """The pixels of one row of the images table (``data`` inline, or ``url`` of a local file)."""
    if isinstance(row.get("data"), str):
        try:
            raw = base64.b64decode(row["data"], validate=True)
        except ValueError as exc:
            raise DataError("Media.content.data is not base64", record_id=row.get("media_id")) from exc
    else:
        url = str(row.get("url") or "")
        if url.startswith(("http://", "https://")):
            raise DataError("remote image URLs are not fetched", record_id=row.get("media_id"), field="content.url")
        path = Path(url.removeprefix("file://"))
        path = path if path.is_absolute() or base is None else base / path
        if not path.is_file():
            raise DataError("image file not found", source=path, record_id=row.get("media_id"))
        raw = path.read_bytes()
    try:
        return decode_bytes(raw, row.get("content_type"))
    except DataError as exc:
        raise DataError(exc.rejection.reason, record_id=row.get("media_id"), field="content") from exc


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def media_resource(patient_id: str, image: np.ndarray, *, rid: str, created: str, title: str | None = None,
                   modality: tuple[str, str] | None = None, body_site: tuple[str, str] | None = None) -> dict:
    """A Media resource holding ``image`` (uint8 pixels) inline as PNG, validated with fhir.resources R4B."""
    r: dict[str, Any] = {
        "resourceType": "Media", "id": rid, "status": "completed",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image"}]},
        "subject": {"reference": f"Patient/{patient_id}"}, "createdDateTime": created,
        "content": {"contentType": PNG, "data": base64.b64encode(png_bytes(image)).decode(),
                    **({"title": title} if title else {})},
    }
    if modality:
        r["modality"] = {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality[0],
                                     "display": modality[1]}]}
    if body_site:
        r["bodySite"] = {"coding": [{"system": t.SNOMED, "code": body_site[0], "display": body_site[1]}]}
    return validate_r4(r)
