"""IWPC warfarin patients <-> FHIR R4.

:func:`iwpc_resources` turns each row of :func:`medmeta.datasets.warfarin.load_iwpc` into FHIR
resources (Patient, Observations, genotype Observations in the Genomics Reporting IG's form,
Conditions, MedicationStatements, a Goal for the target INR); :func:`iwpc_frame` reads any FHIR
source's tables back into the same columns and values as ``load_iwpc``, so the warfarin model
consumes a hospital's records the way it consumes the CSV. Missing values stay missing: nothing
is written for them and they read back as missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pandas as pd

from medmeta.datasets.warfarin import _DRUGS, INDICATIONS, indication_codes
from medmeta.fhir import genomics
from medmeta.fhir import terminology as t
from medmeta.fhir.normalise import FhirTables, measurements, taken_medications

DRUGS = tuple(_DRUGS.values())
DRUG_LABELS = {name: label for label, name in _DRUGS.items()}
INDICATION_COLUMNS = tuple(f"indication_{n}" for n in INDICATIONS.values())
COMORBIDITIES = ("diabetes", "heart_failure", "valve_replacement")
VKORC1_COLUMNS = tuple(f"vkorc1_{m}" for m in genomics.VKORC1_SNPS)
#: The columns :func:`iwpc_frame` returns, with the dtypes ``load_iwpc`` gives them.
COLUMNS = ("subject_id", "sex", "race", "ethnicity", "age_decade", "height_cm", "weight_kg",
           *INDICATION_COLUMNS, *COMORBIDITIES, *DRUGS, "target_inr", "reached_stable_dose", "dose_mg_week",
           "inr_on_dose", "current_smoker", "cyp2c9", *VKORC1_COLUMNS)

# Standard codes where they exist; every IWPC concept also carries its medmeta code (its column name).
_SNOMED = {
    "indication_dvt": ("128053003", "Deep venous thrombosis"),
    "indication_pe": ("59282003", "Pulmonary embolism"),
    "indication_afib": ("49436004", "Atrial fibrillation"),
    "indication_cardiomyopathy": ("85898001", "Cardiomyopathy"),
    "indication_stroke": ("230690007", "Cerebrovascular accident"),
    "diabetes": ("73211009", "Diabetes mellitus"),
    "heart_failure": ("42343007", "Congestive heart failure"),
}
_CONDITION_TEXT = {
    "indication_heart_valve": "Heart valve (indication for warfarin)",
    "indication_post_orthopedic": "After orthopaedic surgery (indication for warfarin)",
    "indication_other": "Other indication for warfarin",
    "heart_failure": "Congestive heart failure and/or cardiomyopathy",
    "valve_replacement": "Heart valve replacement",
}
#: SNOMED codes of other sources' Conditions that count for an IWPC column.
_SNOMED_READ = {
    "diabetes": {"73211009", "44054006", "46635009"},
    "heart_failure": {"42343007", "84114007", "88805009", "85898001"},
    "indication_dvt": {"128053003"}, "indication_pe": {"59282003"}, "indication_afib": {"49436004"},
    "indication_cardiomyopathy": {"85898001"}, "indication_stroke": {"230690007"},
}
#: drug column -> (RxNorm ingredient, ATC class, names matched in other sources' medication text).
_DRUG_CODES: dict[str, tuple[str | None, str | None, tuple[str, ...]]] = {
    "aspirin": ("1191", None, ("aspirin",)),
    "acetaminophen": ("161", None, ("acetaminophen", "paracetamol")),
    "acetaminophen_over_1300mg": ("161", None, ()),
    "simvastatin": ("36567", None, ("simvastatin",)),
    "atorvastatin": ("83367", None, ("atorvastatin",)),
    "fluvastatin": ("41127", None, ("fluvastatin",)),
    "lovastatin": ("6472", None, ("lovastatin",)),
    "pravastatin": ("42463", None, ("pravastatin",)),
    "rosuvastatin": ("301542", None, ("rosuvastatin",)),
    "cerivastatin": ("221072", None, ("cerivastatin",)),
    "amiodarone": ("703", None, ("amiodarone",)),
    "carbamazepine": ("2002", None, ("carbamazepine",)),
    "phenytoin": ("8183", None, ("phenytoin",)),
    "rifampin": ("9384", None, ("rifampin", "rifampicin")),
    "sulfonamide_antibiotics": (None, "J01E", ("sulfamethoxazole", "sulfadiazine", "sulfisoxazole")),
    "macrolide_antibiotics": (None, "J01FA", ("erythromycin", "clarithromycin", "azithromycin")),
    "antifungal_azoles": (None, "J02A", ("fluconazole", "itraconazole", "ketoconazole", "voriconazole",
                                          "posaconazole", "miconazole")),
    "herbal_supplements": (None, None, ()),
}
_TAKEN = {"active": True, "completed": True, "not-taken": False, "stopped": False}
_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.4375, "a": 365.25}


def _id(*parts: str) -> str:
    return "-".join(parts).replace("_", "-")


def _cc(text: str, *codings: tuple[str, str, str | None]) -> dict[str, Any]:
    return {"coding": [{"system": s, "code": c, **({"display": d} if d else {})} for s, c, d in codings],
            "text": text}


def _ombext(url: str, text: str, omb: dict[str, str]) -> dict[str, Any]:
    code = omb.get(text)
    parts = []
    if code:
        system = t.NULL_FLAVOR if code == "UNK" else t.OMB_RACE_ETHNICITY
        parts.append({"url": "ombCategory", "valueCoding": {"system": system, "code": code, "display": text}})
    return {"url": url, "extension": [*parts, {"url": "text", "valueString": text}]}


_RACE = {"White": "2106-3", "Asian": "2028-9", "Black or African American": "2054-5", "Unknown": "UNK"}
_ETHNICITY = {"Hispanic or Latino": "2135-2", "not Hispanic or Latino": "2186-5", "Unknown": "UNK"}
_LAB = [{"coding": [{"system": t.OBSERVATION_CATEGORY, "code": "laboratory"}]},
        {"coding": [{"system": t.DIAGNOSTIC_SERVICE, "code": "GE", "display": "Genetics"}]}]
_VITALS = [{"coding": [{"system": t.OBSERVATION_CATEGORY, "code": "vital-signs"}]}]


def _present(v: Any) -> bool:
    return v is not None and v is not pd.NA and not (isinstance(v, float) and v != v)


def iwpc_resources(row: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The FHIR resources of one IWPC patient (a row of ``load_iwpc`` as a dict)."""
    sid = row["subject_id"]
    subject = {"reference": f"Patient/{sid}"}
    patient: dict[str, Any] = {"resourceType": "Patient", "id": sid,
                               "identifier": [{"system": "https://www.pharmgkb.org/subject", "value": sid}]}
    if _present(row["sex"]):
        patient["gender"] = row["sex"]
    ext = []
    if _present(row["race"]):
        ext.append(_ombext(t.US_CORE_RACE, row["race"], _RACE))
    if _present(row["ethnicity"]):
        ext.append(_ombext(t.US_CORE_ETHNICITY, row["ethnicity"], _ETHNICITY))
    if ext:
        patient["extension"] = ext
    yield patient

    def obs(key: str, code: tuple[str, str, str], **value: Any) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": _id(sid, key), "status": "final", "category": _VITALS,
                "code": _cc(code[2], code), "subject": subject, **value}

    def qty(v: float, unit: str) -> dict[str, Any]:
        return {"value": float(v), "unit": unit, "system": t.UCUM, "code": unit}

    if _present(row["age_decade"]):
        d = int(row["age_decade"])
        band = "90+" if d == 9 else f"{d}0-{d}9"
        yield obs("age-group", (t.LOINC, t.AGE_GROUP, "Age group"),
                  valueCodeableConcept=_cc(f"{band} years", (t.MEDMETA_IWPC, band, f"{band} years")))
    if _present(row["height_cm"]):
        yield obs("height", (t.LOINC, t.HEIGHT, "Body height"), valueQuantity=qty(row["height_cm"], "cm"))
    if _present(row["weight_kg"]):
        yield obs("weight", (t.LOINC, t.WEIGHT, "Body weight"), valueQuantity=qty(row["weight_kg"], "kg"))
    if _present(row["current_smoker"]):
        code = ("77176002", "Smoker") if row["current_smoker"] else ("8392000", "Non-smoker")
        o = obs("smoking", (t.LOINC, t.SMOKING_STATUS, "Tobacco smoking status"),
                valueCodeableConcept=_cc(code[1], (t.SNOMED, *code)))
        o["category"] = [{"coding": [{"system": t.OBSERVATION_CATEGORY, "code": "social-history"}]}]
        yield o
    if _present(row["inr_on_dose"]):
        o = obs("inr", (t.LOINC, t.INR, "INR in Blood by Coagulation assay"),
                valueQuantity=qty(row["inr_on_dose"], "{INR}"), partOf=[{"reference": f"MedicationStatement/"
                                                                                     f"{_id(sid, 'warfarin')}"}])
        o["category"] = _LAB[:1]
        yield o
    if _present(row["reached_stable_dose"]):
        o = obs("stable-dose", (t.MEDMETA_IWPC, "reached_stable_dose", "Reached a stable dose of warfarin"),
                valueBoolean=bool(row["reached_stable_dose"]))
        o["category"] = [{"coding": [{"system": t.OBSERVATION_CATEGORY, "code": "therapy"}]}]
        yield o

    genotype_ids = []
    if _present(row["cyp2c9"]):
        value = {"coding": [{"system": t.PHARMVAR, "code": f"CYP2C9{row['cyp2c9']}",
                             "display": f"CYP2C9 {row['cyp2c9']}"}], "text": f"CYP2C9 {row['cyp2c9']}"}
        genotype_ids.append(_id(sid, "cyp2c9"))
        yield _genotype(genotype_ids[-1], subject, "2623", "CYP2C9", value)
    for marker, (rsid, _, _) in genomics.VKORC1_SNPS.items():
        g = row[f"vkorc1_{marker}"]
        if _present(g):
            genotype_ids.append(_id(sid, "vkorc1", marker))
            text = f"VKORC1 {rsid} {genomics.genomic_alleles(marker, g)}"
            yield _genotype(genotype_ids[-1], subject, "23663", "VKORC1", {"text": text})

    indications = []
    for code in sorted(indication_codes(row.get("indication"))):
        name = f"indication_{INDICATIONS[code]}"
        indications.append(_id(sid, name))
        yield _condition(indications[-1], subject, name, True)
    for name in COMORBIDITIES:
        if _present(row[name]):
            yield _condition(_id(sid, name), subject, name, bool(row[name]))

    warfarin: dict[str, Any] = {
        "resourceType": "MedicationStatement", "id": _id(sid, "warfarin"), "status": "active",
        "medicationCodeableConcept": _cc("Warfarin", (t.RXNORM, t.RXNORM_WARFARIN, "warfarin")),
        "subject": subject}
    if indications:
        warfarin["reasonReference"] = [{"reference": f"Condition/{i}"} for i in indications]
    if _present(row["dose_mg_week"]):
        dose = float(row["dose_mg_week"])
        warfarin["dosage"] = [{
            "text": f"{dose:g} mg per week (therapeutic dose)",
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"}},
            "doseAndRate": [{"doseQuantity": {"value": dose, "unit": "mg", "system": t.UCUM, "code": "mg"}}]}]
    yield warfarin
    if _present(row["target_inr"]):
        yield {"resourceType": "Goal", "id": _id(sid, "target-inr"), "lifecycleStatus": "active",
               "description": {"text": "Target INR"}, "subject": subject,
               "target": [{"measure": _cc("INR", (t.LOINC, t.INR, "INR in Blood by Coagulation assay")),
                           "detailQuantity": qty(row["target_inr"], "{INR}")}]}
    for drug in DRUGS:
        if _present(row[drug]):
            yield _drug_statement(sid, subject, drug, bool(row[drug]))


def _genotype(rid: str, subject: dict, hgnc: str, gene: str, value: dict) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid,
            "meta": {"profile": [f"{t.GENOMICS_IG}/genotype"]}, "status": "final", "category": _LAB,
            "code": _cc("Genotype display name", (t.LOINC, t.GENOTYPE, "Genotype display name")),
            "subject": subject, "valueCodeableConcept": value,
            "component": [{"code": _cc("Gene studied [ID]", (t.LOINC, t.GENE_STUDIED, "Gene studied [ID]")),
                           "valueCodeableConcept": _cc(gene, (t.HGNC, f"HGNC:{hgnc}", gene))}]}


def _condition(rid: str, subject: dict, name: str, present: bool) -> dict[str, Any]:
    text = _CONDITION_TEXT.get(name) or _SNOMED[name][1]
    codings = [(t.SNOMED, *_SNOMED[name])] if name in _SNOMED else []
    cond: dict[str, Any] = {"resourceType": "Condition", "id": rid,
                            "code": _cc(text, *codings, (t.MEDMETA_IWPC, name, text)), "subject": subject,
                            "verificationStatus": {"coding": [{"system": t.CONDITION_VERIFICATION,
                                                               "code": "confirmed" if present else "refuted"}]}}
    if present:
        cond["clinicalStatus"] = {"coding": [{"system": t.CONDITION_CLINICAL, "code": "active"}]}
    return cond


def _drug_statement(sid: str, subject: dict, drug: str, taken: bool) -> dict[str, Any]:
    rxnorm, atc, _ = _DRUG_CODES[drug]
    label = DRUG_LABELS[drug]
    codings = [(t.RXNORM, rxnorm, None)] if rxnorm else []
    codings += [(t.ATC, atc, None)] if atc else []
    st: dict[str, Any] = {"resourceType": "MedicationStatement", "id": _id(sid, drug),
                          "status": "active" if taken else "not-taken",
                          "medicationCodeableConcept": _cc(label, *codings, (t.MEDMETA_IWPC, drug, label)),
                          "subject": subject}
    if drug == "acetaminophen_over_1300mg":
        st["dosage"] = [{"text": "more than 1300 mg per day",
                         "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                         "doseAndRate": [{"doseRange": {"low": {"value": 1300, "unit": "mg", "system": t.UCUM,
                                                                "code": "mg"}}}]}]
    return st


# -- FHIR tables -> the IWPC frame ------------------------------------------------------------------------------
def _has_code(codes: pd.Series, system: str, code: str) -> pd.Series:
    return codes.fillna("").str.split(" ").map(lambda cs: f"{system}|{code}" in cs)


def _medmeta_code(codes: pd.Series) -> pd.Series:
    prefix = f"{t.MEDMETA_IWPC}|"
    return codes.fillna("").map(
        lambda s: next((c[len(prefix):] for c in s.split(" ") if c.startswith(prefix)), None)).astype(object)


def _latest(obs: pd.DataFrame, mask: pd.Series, column: str) -> pd.Series:
    sub = obs.loc[mask, ["patient_id", "time", column]].dropna(subset=[column])
    return sub.sort_values("time", kind="stable", na_position="first").groupby("patient_id")[column].last()


def _any_true(values: pd.DataFrame) -> pd.Series:
    """Per patient: True if any row's ``truth`` is true, else False (patients without rows are absent)."""
    return values.groupby("patient_id")["truth"].max()


def _weekly_mg(meds: pd.DataFrame) -> pd.Series:
    """Dose in mg per week (exact for a dose given per week)."""
    days = meds["period_unit"].map(_PERIOD_DAYS).astype("float64") * meds["period"]
    mg = meds["dose"].where(meds["dose_unit"].isin(["mg", "milligram"]))
    return mg * meds["frequency"].astype("float64") * (7.0 / days)


def _drug_column(meds: pd.DataFrame) -> pd.Series:
    """The IWPC drug column each medication row counts for (None if none)."""
    own = _medmeta_code(meds["codes"])
    text = meds["display"].fillna("").str.lower()
    out = own.where(own.isin(DRUGS))
    for drug, (rxnorm, atc, names) in _DRUG_CODES.items():
        if drug == "acetaminophen_over_1300mg":
            continue
        hit = pd.Series(False, index=meds.index)
        if rxnorm:
            hit |= _has_code(meds["codes"], t.RXNORM, rxnorm)
        if atc:
            hit |= meds["codes"].fillna("").str.contains(f"{t.ATC}|{atc}", regex=False)
        for name in names:
            hit |= text.str.contains(rf"\b{re.escape(name)}\b", regex=True)
        out = out.where(out.notna() | ~hit.fillna(False).astype(bool), drug)
    high = ((out == "acetaminophen") & own.isna() & (_weekly_mg(meds) / 7.0 > 1300)).fillna(False)
    return out.where(~high, "acetaminophen_over_1300mg")


def iwpc_frame(tables: FhirTables) -> pd.DataFrame:
    """The IWPC columns (:data:`COLUMNS`) of every patient in ``tables``, typed as ``load_iwpc`` types them."""
    p = tables.patients
    ids = p["patient_id"]
    frame = pd.DataFrame({"subject_id": ids.astype("string")})
    frame["sex"] = p["gender"].where(p["gender"].isin(["male", "female"])).astype("string")
    frame["race"] = p["race"].astype("string")
    frame["ethnicity"] = p["ethnicity"].astype("string")

    obs = measurements(tables.observations)
    is_loinc = obs["system"] == t.LOINC
    band = _latest(obs, is_loinc & (obs["code"] == t.AGE_GROUP), "value_code")
    age_decade = ids.map(pd.to_numeric(band.str[0], errors="coerce"))  # "60-69" -> 6, "90+" -> 9
    fallback = (p["age"] // 10).clip(upper=9)
    frame["age_decade"] = age_decade.fillna(fallback.where(fallback >= 0)).astype("Int8")
    frame["height_cm"] = ids.map(_latest(obs, is_loinc & (obs["code"] == t.HEIGHT), "value")).astype("Float64")
    frame["weight_kg"] = ids.map(_latest(obs, is_loinc & (obs["code"] == t.WEIGHT), "value")).astype("Float64")

    cond = tables.conditions
    own = _medmeta_code(cond["codes"])
    column = own.copy()
    for name, codes in _SNOMED_READ.items():
        hit = (cond["code"].isin(codes) & (cond["system"] == t.SNOMED)).fillna(False).astype(bool)
        column = column.where(column.notna() | ~hit, name)
    refuted = cond["verification_status"].isin(["refuted"])
    valid = ~cond["verification_status"].isin(["entered-in-error"])
    cond = cond.assign(column=column, truth=~refuted)[valid & column.notna()]

    meds = taken_medications(tables.medications)
    warfarin = meds[_has_code(meds["codes"], t.RXNORM, t.RXNORM_WARFARIN)
                    | meds["display"].fillna("").str.lower().str.contains("warfarin")]
    reasons = warfarin[["patient_id", "reason_ids", "reason_codes"]].copy()
    by_id = cond.set_index("condition_id")["column"]
    rows = []
    for pid, r_ids, r_codes in reasons.itertuples(index=False):
        for rid in (r_ids if isinstance(r_ids, str) else "").split():
            if by_id.get(rid, "").startswith("indication_"):
                rows.append((pid, by_id[rid]))
        for code in (r_codes if isinstance(r_codes, str) else "").split():
            rows += [(pid, n) for n, cs in _SNOMED_READ.items() if n.startswith("indication_") and code in cs]
    ind = pd.DataFrame(rows, columns=["patient_id", "column"])
    has_any = ids.isin(ind["patient_id"])
    for name in INDICATION_COLUMNS:
        hit = ids.isin(ind.loc[ind["column"] == name, "patient_id"])
        frame[name] = hit.astype("boolean").where(has_any, pd.NA)
    comorb = cond[cond["column"].isin(COMORBIDITIES)]
    for name in COMORBIDITIES:
        sub = comorb[comorb["column"] == name]
        frame[name] = ids.map(_any_true(sub)).astype("boolean")

    taken = meds["status"].map(_TAKEN)
    drug_meds = meds.assign(column=_drug_column(meds), truth=taken)
    drug_meds = drug_meds[drug_meds["column"].notna() & drug_meds["truth"].notna()]
    for drug in DRUGS:
        sub = drug_meds[drug_meds["column"] == drug].astype({"truth": "bool"})
        frame[drug] = ids.map(_any_true(sub)).astype("boolean")

    goals = tables.goals
    frame["target_inr"] = ids.map(goals[goals["measure_code"] == t.INR].groupby("patient_id")["target_value"]
                                  .last()).astype("Float64")
    stable = _latest(obs, (obs["system"] == t.MEDMETA_IWPC) & (obs["code"] == "reached_stable_dose"), "value_code")
    frame["reached_stable_dose"] = ids.map(stable.map({"true": True, "false": False})).astype("boolean")
    w = warfarin.assign(weekly=_weekly_mg(warfarin)).dropna(subset=["weekly"])
    weekly = w.sort_values("time", kind="stable", na_position="first").groupby("patient_id")["weekly"].last()
    frame["dose_mg_week"] = ids.map(weekly).astype("Float64")
    inr = _latest(obs, is_loinc & obs["code"].isin([t.INR, "6301-6"]), "value")
    frame["inr_on_dose"] = ids.map(inr).astype("Float64")
    smoke = _latest(obs, is_loinc & (obs["code"] == t.SMOKING_STATUS), "value_code")
    frame["current_smoker"] = ids.map(smoke.map(t.SMOKER)).astype("boolean")

    pgx = tables.pgx.set_index("patient_id")
    for c in ("cyp2c9", *VKORC1_COLUMNS):
        frame[c] = ids.map(pgx[c]).astype("string")
    return frame[list(COLUMNS)].reset_index(drop=True)
