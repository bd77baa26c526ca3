import pandas as pd
import pytest

from medmeta.datasets.cgm import load_cgm
from medmeta.errors import DataError


def test_sample_subjects(samples):
    series, rejected = load_cgm(samples / "cgm_iglu" / "example_data_hall.csv")
    assert rejected == [] and len(series) == 6
    diagnoses = sorted(s.attributes["diagnosis"] for s in series.values())
    assert diagnoses == ["diabetic"] * 3 + ["pre-diabetic"] * 3
    for s in series.values():
        assert s.time.is_monotonic_increasing and s.time.is_unique
        assert s.interval == pd.Timedelta(minutes=5)
        grid = s.regular()
        assert grid.notna().sum() <= len(s)
        assert (grid.index[1:] - grid.index[:-1] == s.interval).all()


@pytest.fixture
def csv_file(tmp_path):
    def write(text):
        path = tmp_path / "cgm.csv"
        path.write_text(text)
        return path
    return write


def test_gaps_units_and_rejections(csv_file):
    path = csv_file(
        "id,time,gl,unit\n"
        "a,2020-01-01 00:00:00,5.5,mmol/L\n"
        "a,2020-01-01 00:05:00,6.0,mmol/L\n"
        "a,2020-01-01 00:10:00,6.1,mmol/L\n"
        "a,2020-01-01 01:10:00,7.0,mmol/L\n"     # a 60-minute gap before this one
        "a,2020-01-01 01:10:00,7.1,mmol/L\n"     # duplicate time
        "a,yesterday,100,mg/dL\n"
        "b,2020-01-01 00:00:00,NA,mg/dL\n"
        "b,2020-01-01 00:05:00,2000,mg/dL\n"
        "b,2020-01-01 00:10:00,120,mg/L\n"
        ",2020-01-01 00:10:00,120,mg/dL\n"
        "b,2020-01-01 00:15:00,120,mg/dL\n"
    )
    series, rejected = load_cgm(path)
    a = series["a"]
    assert a.glucose[0] == pytest.approx(5.5 * 18.0156)
    assert a.gaps() == [(pd.Timestamp("2020-01-01 00:10"), pd.Timestamp("2020-01-01 01:10"))]
    reasons = {r.row: (r.field, r.reason) for r in rejected}
    assert reasons[6][1] == "second reading at the same time"
    assert reasons[7][0] == "time" and "date-time" in reasons[7][1]
    assert "missing or not a number" in reasons[8][1]
    assert "implausible" in reasons[9][1]
    assert reasons[10][0] == "unit"
    assert "missing subject id" in reasons[11][1]
    assert len(series["b"]) == 1
    assert sum(len(s) for s in series.values()) + len(rejected) == 11


def test_bad_files(csv_file, tmp_path):
    with pytest.raises(DataError, match="field 'gl': missing column"):
        load_cgm(csv_file("id,time,glucose\na,2020-01-01,100\n"))
    with pytest.raises(DataError, match="unknown glucose unit"):
        load_cgm(csv_file("id,time,gl\n"), unit="mg")
    with pytest.raises(DataError, match="file not found"):
        load_cgm(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="line 2"):
        load_cgm(csv_file("id,time,gl\na,2020-01-01,abc\n"), strict=True)


@pytest.mark.full_data
def test_full_hall_data(full_data):
    series, rejected = load_cgm(full_data / "cgm_iglu" / "example_data_hall.csv")
    assert len(series) == 19 and rejected == []
    assert sum(len(s) for s in series.values()) == 34890
