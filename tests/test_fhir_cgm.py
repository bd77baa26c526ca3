import numpy as np
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.datasets.cgm import load_cgm
from medmeta.fhir import read
from medmeta.fhir.cgm import CGM_MOLAR, cgm_resources, cgm_series


def test_cgm_round_trip_through_fhir(samples, tmp_path):
    csv = samples / "cgm_iglu" / "example_data_hall.csv"
    result = CliRunner().invoke(app, ["fhir", "from-cgm", str(csv), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    tables = read(tmp_path)
    assert not tables.rejected
    original, _ = load_cgm(csv)
    back = cgm_series(tables)
    assert set(back) == set(original)
    for sid, s in original.items():
        assert (back[sid].time == s.time).all()
        assert np.allclose(back[sid].glucose, s.glucose, atol=0.01)


def test_molar_readings_are_converted(tmp_path):
    from medmeta.fhir import write_ndjson

    csv = tmp_path / "cgm.csv"
    csv.write_text("id,time,gl\np1,2020-01-01 00:00:00,100\np1,2020-01-01 00:05:00,110\n")
    series, _ = load_cgm(csv)
    resources = list(cgm_resources(series["p1"]))
    resources[2]["code"]["coding"][0]["code"] = CGM_MOLAR
    resources[2]["valueQuantity"] = {"value": 6.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                                     "code": "mmol/L"}
    write_ndjson(resources, tmp_path / "fhir")
    back = cgm_series(read(tmp_path / "fhir"))["p1"]
    assert back.glucose.tolist() == [100.0, 6.1 * 18.016]
