"""Genotypes from Genomics Reporting IG Observations: CYP2C9 diplotypes, VKORC1 genotypes, phenotypes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medmeta.fhir import genomics, read
from medmeta.fhir import terminology as t

PATIENT = {"resourceType": "Patient", "id": "p1"}


def genomic(oid: str, code: str, value: dict | None, components: list[dict]) -> dict:
    r = {"resourceType": "Observation", "id": oid, "status": "final",
         "code": {"coding": [{"system": t.LOINC, "code": code}]}, "subject": {"reference": "Patient/p1"},
         "component": [{"code": {"coding": [{"system": t.LOINC, "code": c}]}, **v} for c, v in components]}
    if value is not None:
        r["valueCodeableConcept"] = value
    return r


GENE = {"CYP2C9": (t.GENE_STUDIED, {"valueCodeableConcept": {"coding": [{"system": t.HGNC, "code": "HGNC:2623",
                                                                          "display": "CYP2C9"}]}}),
        "VKORC1": (t.GENE_STUDIED, {"valueCodeableConcept": {"coding": [{"system": t.HGNC, "code": "HGNC:23663",
                                                                          "display": "VKORC1"}]}})}


def variant(oid: str, rsid: str, ref: str, alt: str, state: str | None, gene: str = "CYP2C9") -> dict:
    comps = [GENE[gene], (t.DBSNP_ID, {"valueCodeableConcept": {"coding": [{"system": t.DBSNP, "code": rsid}]}}),
             (t.REF_ALLELE, {"valueString": ref}), (t.ALT_ALLELE, {"valueString": alt})]
    if state:
        comps.append((t.ALLELIC_STATE, {"valueCodeableConcept": {"coding": [{"system": t.LOINC, "code": state}]}}))
    value = {"coding": [{"system": t.LOINC, "code": t.PRESENT if state else t.ABSENT}]}
    return genomic(oid, t.VARIANT, value, comps)


def read_resources(tmp_path, resources):
    (tmp_path / "Patient.ndjson").write_text(json.dumps(PATIENT) + "\n")
    (tmp_path / "Observation.ndjson").write_text("".join(json.dumps(r) + "\n" for r in resources))
    return read(tmp_path)


def test_ig_example_genotype_bundle(samples):
    tables = read(samples / "fhir_genomics_examples" / "Bundle-diagnosticreport-cgexample.json")
    assert tables.pgx.set_index("patient_id").loc["patient", "cyp2c9"] == "*2/*5"
    assert tables.pgx.set_index("patient_id").loc["patient", "cyp2c9_phenotype"] == "Intermediate metabolizer"


def test_genotype_haplotype_and_variant_forms(tmp_path):
    resources = [
        genomic("g1", t.GENOTYPE, {"text": "VKORC1 rs9923231 C/T"}, [GENE["VKORC1"]]),  # the IG's form
        genomic("g2", t.GENOTYPE, {"text": "rs9934438 A/A"}, [GENE["VKORC1"]]),  # genomic A/A = coding T/T
        genomic("h1", t.HAPLOTYPE, {"coding": [{"system": t.PHARMVAR, "code": "CYP2C9*3"}]}, [GENE["CYP2C9"]]),
        genomic("h2", t.HAPLOTYPE, {"coding": [{"system": t.PHARMVAR, "code": "CYP2C9*1"}]}, [GENE["CYP2C9"]]),
        variant("v1", "rs2884737", "T", "G", t.HETEROZYGOUS, gene="VKORC1"),
    ]
    pgx = read_resources(tmp_path, resources).pgx.set_index("patient_id").loc["p1"]
    assert pgx["vkorc1_1639"] == "A/G"
    assert pgx["vkorc1_1173"] == "T/T"
    assert pgx["vkorc1_497"] == "G/T"
    assert pgx["cyp2c9"] == "*1/*3"
    assert pgx["cyp2c9_activity_score"] == 1.0 and pgx["cyp2c9_phenotype"] == "Intermediate metabolizer"


@pytest.mark.parametrize(("star2", "star3", "expected"), [
    (None, None, "*1/*1"), (t.HETEROZYGOUS, None, "*1/*2"), (t.HOMOZYGOUS, None, "*2/*2"),
    (t.HETEROZYGOUS, t.HETEROZYGOUS, "*2/*3"), (None, t.HOMOZYGOUS, "*3/*3"),
])
def test_cyp2c9_from_variants(tmp_path, star2, star3, expected):
    resources = [variant("a", "rs1799853", "C", "T", star2), variant("b", "rs1057910", "A", "C", star3)]
    assert read_resources(tmp_path, resources).pgx.iloc[0]["cyp2c9"] == expected


def test_one_variant_is_not_enough_for_a_diplotype(tmp_path):
    tables = read_resources(tmp_path, [variant("a", "rs1799853", "C", "T", None)])
    assert tables.genotypes.iloc[0]["call"] == "0"  # tested, absent
    assert tables.pgx.iloc[0]["cyp2c9"] is pd.NA  # *3 untested: no diplotype is guessed


def test_uninterpretable_genotype_is_kept_and_reported(tmp_path):
    tables = read_resources(tmp_path, [genomic("g", t.GENOTYPE, {"text": "CYP2C9 ???"}, [GENE["CYP2C9"]])])
    assert len(tables.genotypes) == 1 and tables.genotypes.iloc[0]["raw"] == "CYP2C9 ???"
    assert tables.genotypes["call"].isna().all()
    assert "genotype not interpreted" in set(tables.unmapped["issue"])


@pytest.mark.parametrize(("diplotype", "score", "phenotype"), [
    ("*1/*1", 2.0, "Normal metabolizer"), ("*1/*2", 1.5, "Intermediate metabolizer"),
    ("*1/*3", 1.0, "Intermediate metabolizer"), ("*2/*3", 0.5, "Poor metabolizer"),
    ("*3/*3", 0.0, "Poor metabolizer"), ("*1/*99", None, "Indeterminate"),
])
def test_cpic_phenotypes(diplotype, score, phenotype):
    assert genomics.cyp2c9_activity(diplotype) == score
    assert genomics.cyp2c9_phenotype(diplotype) == phenotype


def test_vkorc1_strands_round_trip():
    for marker, (_, ref, alt) in genomics.VKORC1_SNPS.items():
        for g in (f"{ref}/{ref}", "/".join(sorted((ref, alt))), f"{alt}/{alt}"):
            genomic_form = genomics.genomic_alleles(marker, g)
            assert genomics.vkorc1_genotype(marker, *genomic_form.split("/")) == g
