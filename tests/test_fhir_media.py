import shutil

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medmeta.datasets.medmnist import load_medmnist
from medmeta.errors import DataError
from medmeta.fhir import read, write_ndjson
from medmeta.fhir.media import DICOM, decode_image, media_resource

CREATED = "2024-01-01T00:00:00Z"


def test_inline_png_and_local_dicom_images(samples, tmp_path):
    image = load_medmnist(samples / "medmnist" / "bloodmnist.npz", "test").images[0]  # colour
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    dicom = {"resourceType": "Media", "id": "ct", "status": "completed", "subject": {"reference": "Patient/p"},
             "content": {"contentType": DICOM, "url": "ct.dcm"}}
    write_ndjson([{"resourceType": "Patient", "id": "p"}, media_resource("p", image, rid="png", created=CREATED),
                  dicom], tmp_path / "fhir")
    tables = read(tmp_path / "fhir")
    assert not tables.rejected and len(tables.images) == 2
    rows = {r["media_id"]: r for r in tables.images.to_dict("records")}
    assert np.array_equal(decode_image(rows["png"]), image)
    ct = decode_image(rows["ct"], base=tmp_path)
    assert ct.shape == (128, 128) and ct.dtype == np.uint8 and ct.max() == 255


def test_bad_images_are_named(tmp_path):
    with pytest.raises(DataError, match="remote image URLs are not fetched"):
        decode_image({"media_id": "m", "url": "https://example.org/x.png"})
    with pytest.raises(DataError, match="image file not found"):
        decode_image({"media_id": "m", "url": "missing.png"}, base=tmp_path)
    with pytest.raises(DataError, match="not base64"):
        decode_image({"media_id": "m", "data": "***"})
    with pytest.raises(DataError, match="record m, field 'content'"):
        decode_image({"media_id": "m", "data": "aGVsbG8=", "content_type": "image/png"})


def test_media_without_content_or_patient_is_rejected(tmp_path):
    empty = {"resourceType": "Media", "id": "e", "status": "completed", "subject": {"reference": "Patient/p"},
             "content": {"contentType": "image/png"}}
    orphan = {"resourceType": "Media", "id": "o", "status": "completed", "subject": {"reference": "Patient/zz"},
              "content": {"url": "x.png"}}
    (tmp_path / "Media.ndjson").write_text("\n".join(__import__("json").dumps(r) for r in (empty, orphan)))
    (tmp_path / "Patient.ndjson").write_text('{"resourceType": "Patient", "id": "p"}')
    tables = read(tmp_path)
    reasons = sorted(r.reason for r in tables.rejected)
    assert reasons == ["Media.content has neither data nor url", "patient 'zz' is not in the source"]
    assert tables.counts.add_up()
