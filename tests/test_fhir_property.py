"""Property-based tests: real resources, mutated at random, are either used or rejected with a reason.

Whatever the mutation, the reader never fails, the counts add up, and a mutation of a field the
tables use that ``fhir.resources`` R4B rejects is rejected by medmeta's fast validation too.
"""

from __future__ import annotations

import copy
import gzip
import json

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from medmeta.datasets.warfarin import load_iwpc
from medmeta.fhir import iwpc_resources, read_entries
from medmeta.fhir.sources import Entry
from medmeta.paths import sample_data_dir

# Paths of the fields the tables use, per resource type.
PATHS = {
    "Patient": [("gender",), ("birthDate",), ("deceasedDateTime",), ("id",)],
    "Observation": [("status",), ("code",), ("code", "coding", 0, "code"), ("code", "coding", 0, "system"),
                    ("subject",), ("subject", "reference"), ("effectiveDateTime",), ("valueQuantity", "value"),
                    ("valueQuantity", "unit"), ("valueQuantity",), ("component",), ("id",), ("issued",)],
    "Condition": [("code",), ("subject",), ("onsetDateTime",), ("abatementDateTime",), ("clinicalStatus",),
                  ("code", "coding", 0, "display"), ("recordedDate",)],
    "MedicationRequest": [("status",), ("intent",), ("medicationCodeableConcept",), ("subject",), ("authoredOn",),
                          ("dosageInstruction",)],
    "MedicationStatement": [("status",), ("medicationCodeableConcept",), ("subject",), ("dosage",),
                            ("reasonReference",)],
    "Goal": [("lifecycleStatus",), ("description",), ("subject",), ("target",)],
}


def _pool() -> list[dict]:
    root = sample_data_dir()
    bundle = json.loads(gzip.decompress(next((root / "synthea_fhir_r4" / "bundles").glob("*.json.gz")).read_bytes()))
    resources = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] in PATHS]
    frame = load_iwpc(root / "iwpc_warfarin" / "warfarin.csv").data
    row = frame[frame["dose_mg_week"].notna() & frame["target_inr"].notna()].iloc[0].to_dict()
    resources += [r for r in iwpc_resources(row) if r["resourceType"] in PATHS and r["resourceType"] != "Patient"]
    # every resource refers to one patient, who is always present and never mutated
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    for r in resources:
        if "subject" in r:
            r["subject"] = {"reference": f"Patient/{patient['id']}"}
    return [patient, *[r for r in resources if r is not patient]]


POOL = _pool()
PATIENT = POOL[0]
JUNK = st.one_of(st.none(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                 st.text(max_size=12), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.sampled_from(["a", "code", "value"]), st.integers(), max_size=2),
                 st.from_regex(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}([+-]\d{2}:\d{2}|Z)?)?", fullmatch=True))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def _mutate(resource: dict, path: tuple, value, delete: bool) -> dict | None:
    r = copy.deepcopy(resource)
    try:
        parent = _get(r, path[:-1])
        parent[path[-1]]  # the path must exist
    except (KeyError, IndexError, TypeError):
        return None
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return r


def _r4b_accepts(resource: dict) -> bool:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except (ValidationError, ValueError, TypeError):
        return False
    return True


def _read(resources: list[dict]):
    entries = [Entry(r, "mutated.ndjson", i) for i, r in enumerate(resources, start=1)]
    return read_entries(entries)


def test_the_pool_is_valid_and_fully_used():
    assert {r["resourceType"] for r in POOL} == set(PATHS)
    tables = _read(POOL)
    assert not tables.rejected, tables.rejected[:3]
    assert all(_r4b_accepts(r) for r in POOL)


def check_mutation(data) -> None:
    target = data.draw(st.sampled_from(POOL[1:]))
    path = data.draw(st.sampled_from(PATHS[target["resourceType"]]))
    delete = data.draw(st.booleans())
    mutated = _mutate(target, path, data.draw(JUNK), delete)
    if mutated is None:
        return
    tables = _read([PATIENT, mutated])
    assert tables.counts.add_up() and tables.counts.totals()["read"] == 2
    rejected = {r.row for r in tables.rejected}
    assert 1 not in rejected  # the patient is untouched
    if not _r4b_accepts(mutated):
        assert rejected == {2}, (path, delete, mutated.get(path[0], "<deleted>"))
    for r in tables.rejected:
        assert r.source == "mutated.ndjson" and r.reason


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_resources_are_used_or_rejected_and_never_lost(data):
    check_mutation(data)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_many_more_mutations(data):
    check_mutation(data)


@settings(max_examples=100, deadline=None)
@given(line=st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_garbage_lines_are_rejected_not_fatal(tmp_path_factory, line):
    folder = tmp_path_factory.mktemp("garbage")
    (folder / "Observation.ndjson").write_text(json.dumps(POOL[1]) + "\n" + line.replace("\n", " ") + "\n")
    (folder / "Patient.ndjson").write_text(json.dumps(PATIENT) + "\n")
    from medmeta.fhir import read

    tables = read(folder)
    assert tables.counts.add_up()
    assert tables.counts.used["Patient"] == 1


@pytest.mark.parametrize("what", ["resourceType", "id"])
def test_duplicates_and_missing_type_of_real_resources(what):
    obs = next(r for r in POOL if r["resourceType"] == "Observation")
    second = copy.deepcopy(obs)
    if what == "resourceType":
        del second["resourceType"]
    tables = _read([PATIENT, obs, second])
    assert [r.row for r in tables.rejected] == [3]
    assert ("duplicate id" if what == "id" else "missing resourceType") in tables.rejected[0].reason
