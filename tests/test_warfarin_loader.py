import csv

import pandas as pd
import pytest

from medmeta.datasets.warfarin import SCHEMA, indication_codes, load_iwpc
from medmeta.errors import DataError


@pytest.fixture(scope="module")
def sample_rows(samples):
    with (samples / "iwpc_warfarin" / "warfarin.csv").open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


@pytest.fixture
def write(tmp_path):
    def write(rows, encoding="utf-8-sig"):
        path = tmp_path / "warfarin.csv"
        with path.open("w", encoding=encoding, newline="") as f:
            csv.writer(f).writerows(rows)
        return path
    return write


def test_sample_loads_typed(samples):
    frame, rejected = load_iwpc(samples / "iwpc_warfarin" / "warfarin.csv")
    assert rejected == []
    assert len(frame) == 500
    assert [c for _, c, _ in SCHEMA] == list(frame.columns[: len(SCHEMA)])
    assert str(frame["age_decade"].dtype) == "Int8"
    assert str(frame["dose_mg_week"].dtype) == "Float64"
    assert str(frame["amiodarone"].dtype) == "boolean"
    assert set(frame["age_decade"].dropna().unique()) <= set(range(1, 10))
    assert frame["cyp2c9"].dropna().str.match(r"^\*\d+/\*\d+$").all()
    assert frame["vkorc1_1639"].dropna().isin(["A/A", "A/G", "G/G"]).all()
    assert frame["subject_id"].is_unique


def test_indication_codes():
    assert indication_codes("3; 8") == {3, 8}
    assert indication_codes("1 or 2") == {1, 2}
    assert indication_codes(None) == frozenset()


def col(name):
    return next(h for h, c, _ in SCHEMA if c == name)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("age_decade", "sixty", "decade bin"),
    ("height_cm", "tall", "positive number"),
    ("weight_kg", "-70", "positive number"),
    ("cyp2c9", "*1*3", "diplotype"),
    ("vkorc1_1639", "A/X", "genotype"),
    ("amiodarone", "yes", "0 or 1"),
    ("indication", "9", "indication codes"),
])
def test_bad_value_rejects_the_row_naming_line_subject_and_field(sample_rows, write, column, value, message):
    rows = [r[:] for r in sample_rows]
    header = rows[0]
    rows[5][header.index(col(column))] = value
    frame, rejected = load_iwpc(write(rows))
    assert len(frame) == 499 and len(rejected) == 1
    r = rejected[0]
    assert r.row == 6 and r.record_id == rows[5][0] and r.field == col(column) and message in r.reason
    with pytest.raises(DataError, match=f"line 6, record {rows[5][0]}"):
        load_iwpc(write(rows), strict=True)


def test_structural_problems(sample_rows, write):
    rows = [r[:] for r in sample_rows]
    rows[3] = rows[3][:10]                # too few fields
    rows[7][0] = rows[8][0]               # duplicate id (the later one is rejected)
    rows.append([""] * len(rows[0]))      # blank row
    frame, rejected = load_iwpc(write(rows))
    reasons = {r.row: r.reason for r in rejected}
    assert "10 fields" in reasons[4]
    assert reasons[9] == "duplicate subject id"
    assert reasons[len(rows)] == "empty row"
    assert len(frame) + len(rejected) == len(rows) - 1


def test_missing_column_and_encoding(sample_rows, write, tmp_path):
    rows = [r[:] for r in sample_rows]
    rows[0][rows[0].index("Age")] = "Age group"
    with pytest.raises(DataError, match="field 'Age': missing column"):
        load_iwpc(write(rows))
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"PharmGKB Subject ID,Gender\n\xe9,male\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_iwpc(latin)
    with pytest.raises(DataError, match="file not found"):
        load_iwpc(tmp_path / "none.csv")


@pytest.mark.full_data
def test_full_file(full_data):
    frame, rejected = load_iwpc(full_data / "iwpc_warfarin" / "warfarin.csv")
    assert len(frame) == 4566
    assert [r.reason for r in rejected] == ["empty row"]
    assert int(frame["dose_mg_week"].notna().sum()) == 4426
    assert frame["race"].value_counts().to_dict()["Black or African American"] == 382
    assert pd.isna(frame["vkorc1_1639"]).sum() == 1205
