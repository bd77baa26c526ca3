"""The IWPC warfarin data set (IWPC, N Engl J Med 2009;360:753-64; distributed by PharmGKB).

:func:`load_iwpc` reads the consortium's CSV (UTF-8 with BOM, ``NA`` for missing, age in
decade bins) into a typed DataFrame with stable snake_case columns. Rows that cannot be
used are returned as rejections that name the line, subject and field.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from medmeta.datasets import Loaded
from medmeta.errors import DataError, Rejection

MISSING = frozenset({"", "NA"})

#: IWPC indication codes (the data set's metadata sheet).
INDICATIONS = {
    1: "dvt", 2: "pe", 3: "afib", 4: "heart_valve", 5: "cardiomyopathy", 6: "stroke",
    7: "post_orthopedic", 8: "other",
}

_VK = "VKORC1 genotype: {}"
_VKQ = "VKORC1 QC genotype: {}"
_SNPS = {  # short name -> the marker's description in the IWPC header
    "1639": "-1639 G>A (3673); chr16:31015190; rs9923231; C/T",
    "497": "497T>G (5808); chr16:31013055; rs2884737; A/C",
    "1173": "1173 C>T(6484); chr16:31012379; rs9934438; A/G",
    "1542": "1542G>C (6853); chr16:31012010; rs8050894; C/G",
    "3730": "3730 G>A (9041); chr16:31009822; rs7294;  A/G",
    "2255": "2255C>T (7566); chr16:31011297; rs2359612; A/G",
    "4451": "-4451 C>A (861); Chr16:31018002; rs17880887; A/C",
}
_DRUGS = {
    "Aspirin": "aspirin",
    "Acetaminophen or Paracetamol (Tylenol)": "acetaminophen",
    "Was Dose of Acetaminophen or Paracetamol (Tylenol) >1300mg/day": "acetaminophen_over_1300mg",
    "Simvastatin (Zocor)": "simvastatin",
    "Atorvastatin (Lipitor)": "atorvastatin",
    "Fluvastatin (Lescol)": "fluvastatin",
    "Lovastatin (Mevacor)": "lovastatin",
    "Pravastatin (Pravachol)": "pravastatin",
    "Rosuvastatin (Crestor)": "rosuvastatin",
    "Cerivastatin (Baycol)": "cerivastatin",
    "Amiodarone (Cordarone)": "amiodarone",
    "Carbamazepine (Tegretol)": "carbamazepine",
    "Phenytoin (Dilantin)": "phenytoin",
    "Rifampin or Rifampicin": "rifampin",
    "Sulfonamide Antibiotics": "sulfonamide_antibiotics",
    "Macrolide Antibiotics": "macrolide_antibiotics",
    "Anti-fungal Azoles": "antifungal_azoles",
    "Herbal Medications, Vitamins, Supplements": "herbal_supplements",
}

#: (header in the CSV, column in the DataFrame, kind), in the file's order.
SCHEMA: tuple[tuple[str, str, str], ...] = (
    ("PharmGKB Subject ID", "subject_id", "id"),
    ("Gender", "sex", "text"),
    ("Race", "race", "text"),
    ("Ethnicity", "ethnicity", "text"),
    ("Age", "age_decade", "age"),
    ("Height (cm)", "height_cm", "positive"),
    ("Weight (kg)", "weight_kg", "positive"),
    ("Indication for Warfarin Treatment", "indication", "indication"),
    ("Comorbidities", "comorbidities", "text"),
    ("Diabetes", "diabetes", "bool"),
    ("Congestive Heart Failure and/or Cardiomyopathy", "heart_failure", "bool"),
    ("Valve Replacement", "valve_replacement", "bool"),
    ("Medications", "medications", "text"),
    *((header, name, "bool") for header, name in _DRUGS.items()),
    ("Target INR", "target_inr", "positive"),
    ("Estimated Target INR Range Based on Indication", "target_inr_range", "text"),
    ("Subject Reached Stable Dose of Warfarin", "reached_stable_dose", "bool"),
    ("Therapeutic Dose of Warfarin", "dose_mg_week", "positive"),
    ("INR on Reported Therapeutic Dose of Warfarin", "inr_on_dose", "positive"),
    ("Current Smoker", "current_smoker", "bool"),
    ("Cyp2C9 genotypes", "cyp2c9_genotypes", "diplotype"),
    ("Genotyped QC Cyp2C9*2", "cyp2c9_qc_star2", "diplotype"),
    ("Genotyped QC Cyp2C9*3", "cyp2c9_qc_star3", "diplotype"),
    ("Combined QC CYP2C9", "cyp2c9_qc_combined", "diplotype"),
    *(
        column
        for short, marker in _SNPS.items()
        for column in (
            (_VK.format(marker), f"vkorc1_{short}_genotype", "snp"),
            (_VKQ.format(marker), f"vkorc1_{short}_qc", "snp"),
        )
    ),
    ("CYP2C9 consensus", "cyp2c9", "diplotype"),
    *((f"VKORC1 {'-' if short in ('1639', '4451') else ''}{short} consensus", f"vkorc1_{short}", "snp")
      for short in _SNPS),
)

_AGE = re.compile(r"^(?P<d>[1-8])0 - (?P=d)9$|^90\+$")
_DIPLOTYPE = re.compile(r"^\*\d+[A-Z]?/\*\d+[A-Z]?$")
_SNP = re.compile(r"^[ACGT]/[ACGT]$")
_INDICATION = re.compile(r"^[1-8](\s*(;|,| or )\s*[1-8])*$")


def _parse_age(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    ok = s.str.match(_AGE)
    decade = s.str[0].where(s != "90+", "9")
    return pd.to_numeric(decade.where(ok), errors="coerce").astype("Int8"), ok


def _parse_positive(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    values = pd.to_numeric(s, errors="coerce")
    return values.astype("Float64"), values.notna() & (values > 0)


def _parse_bool(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    return s.map({"0": False, "1": True}).astype("boolean"), s.isin(("0", "1"))


def _parse_text(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    return s.astype("string"), pd.Series(True, index=s.index)


def _matcher(pattern: re.Pattern) -> Callable[[pd.Series], tuple[pd.Series, pd.Series]]:
    def parse(s: pd.Series) -> tuple[pd.Series, pd.Series]:
        return s.astype("string"), s.str.match(pattern)

    return parse


_PARSERS = {
    "id": _parse_text,
    "text": _parse_text,
    "age": _parse_age,
    "positive": _parse_positive,
    "bool": _parse_bool,
    "diplotype": _matcher(_DIPLOTYPE),
    "snp": _matcher(_SNP),
    "indication": _matcher(_INDICATION),
}
_EXPECTED = {
    "age": 'a decade bin such as "60 - 69" or "90+"',
    "positive": "a positive number",
    "bool": "0 or 1",
    "diplotype": 'a star-allele diplotype such as "*1/*3"',
    "snp": 'a genotype such as "A/G"',
    "indication": 'IWPC indication codes 1-8 such as "3; 8"',
}


def indication_codes(value: str | None) -> frozenset[int]:
    """``"3; 8"`` -> ``{3, 8}``; ``"1 or 2"`` -> ``{1, 2}``; missing -> empty."""
    if value is None or value is pd.NA or value in MISSING:
        return frozenset()
    return frozenset(int(c) for c in re.findall(r"[1-8]", value))


def load_iwpc(path: str | Path, *, strict: bool = False) -> Loaded[pd.DataFrame]:
    """Read the IWPC CSV into one typed row per patient.

    Columns follow :data:`SCHEMA`, plus ``indication_<name>`` booleans for the codes in
    :data:`INDICATIONS`. A row with a value of the wrong form, a duplicate subject id or the
    wrong number of fields is rejected (``strict=True`` raises :class:`DataError` instead).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", source=path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError("empty file", source=path)
            records = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", source=path) from exc

    positions = {name: i for i, name in enumerate(header)}
    for csv_name, _, _ in SCHEMA:
        if csv_name not in positions:
            raise DataError("missing column", source=path, field=csv_name, row=1)

    rejected: list[Rejection] = []
    lines, rows = [], []
    for line, row in records:
        if not any(cell.strip() for cell in row):
            rejected.append(Rejection(str(path), "empty row", row=line))
        elif len(row) != len(header):
            rid = row[positions["PharmGKB Subject ID"]] if len(row) > positions["PharmGKB Subject ID"] else None
            rejected.append(Rejection(str(path), f"{len(row)} fields, header has {len(header)}",
                                      row=line, record_id=rid or None))
        else:
            lines.append(line)
            rows.append(row)

    raw = pd.DataFrame(rows, columns=range(len(header)), dtype="string")
    frame = pd.DataFrame(index=raw.index)
    problems: dict[int, list[tuple[str, str]]] = {}
    for csv_name, column, kind in SCHEMA:
        text = raw[positions[csv_name]].str.strip()
        missing = text.isin(MISSING)
        values, ok = _PARSERS[kind](text.where(~missing, ""))
        frame[column] = values.where(~missing)
        for i in np.flatnonzero(~(ok.fillna(False) | missing).to_numpy()):
            problems.setdefault(int(i), []).append((csv_name, f"{text.iloc[i]!r} is not {_EXPECTED[kind]}"))

    ids = frame["subject_id"]
    for i in np.flatnonzero(ids.isna().to_numpy()):
        problems.setdefault(int(i), []).append(("PharmGKB Subject ID", "missing subject id"))
    for i in np.flatnonzero((ids.duplicated() & ids.notna()).to_numpy()):
        problems.setdefault(int(i), []).append(("PharmGKB Subject ID", "duplicate subject id"))

    for i, found in sorted(problems.items()):
        field, reason = found[0]
        more = f" (and {len(found) - 1} more problems)" if len(found) > 1 else ""
        rid = ids.iloc[i]
        rejected.append(Rejection(str(path), reason + more, row=lines[i], field=field,
                                  record_id=None if rid is pd.NA else str(rid)))
    rejected.sort(key=lambda r: r.row or 0)
    if strict and rejected:
        raise DataError.from_rejection(rejected[0])

    frame = frame.drop(index=list(problems)).reset_index(drop=True)
    codes = frame["indication"].map(indication_codes, na_action="ignore")
    for code, name in INDICATIONS.items():
        frame[f"indication_{name}"] = codes.map(lambda c, code=code: code in c, na_action="ignore").astype("boolean")
    frame.attrs["source"] = str(path)
    return Loaded(frame, rejected)
