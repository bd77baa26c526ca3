"""Pharmacogenomic calls from HL7 Genomics Reporting IG Observations.

Genotype (LOINC 84413-4, gene in component 48018-6), haplotype (84414-2) and variant
(69548-6) Observations become CYP2C9 star-allele diplotypes and VKORC1 SNP genotypes, and the
CYP2C9 metaboliser phenotype follows from CPIC's allele activity values.

VKORC1 genotypes are given in IWPC's notation: alleles on the VKORC1 coding strand, sorted
(``"A/G"`` for -1639G>A). The IG writes them on the genomic forward strand
(``"VKORC1 rs9923231 C/T"``); VKORC1 lies on the reverse strand, so those are complemented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medmeta.fhir import terminology as t

#: IWPC marker name -> (dbSNP id, reference allele > variant allele on the VKORC1 coding strand).
VKORC1_SNPS: dict[str, tuple[str, str, str]] = {
    "1639": ("rs9923231", "G", "A"),
    "497": ("rs2884737", "T", "G"),
    "1173": ("rs9934438", "C", "T"),
    "1542": ("rs8050894", "G", "C"),
    "3730": ("rs7294", "G", "A"),
    "2255": ("rs2359612", "C", "T"),
    "4451": ("rs17880887", "C", "A"),
}
_RSID_TO_MARKER = {rs: short for short, (rs, _, _) in VKORC1_SNPS.items()}
_COMPLEMENT = str.maketrans("ACGT", "TGCA")

#: CPIC activity value of each CYP2C9 allele (1 normal, 0.5 decreased, 0 no function).
CYP2C9_ACTIVITY = {"*1": 1.0, "*2": 0.5, "*3": 0.0, "*5": 0.5, "*6": 0.0, "*8": 0.5, "*11": 0.5, "*13": 0.0,
                   "*14": 0.5}
#: dbSNP ids of the variants that define CYP2C9 star alleles (used when only variants are reported).
CYP2C9_VARIANTS = {"rs1799853": "*2", "rs1057910": "*3", "rs28371686": "*5", "rs9332131": "*6",
                   "rs7900194": "*8", "rs28371685": "*11"}
_HGNC_IDS = {"2623": "CYP2C9", "23663": "VKORC1"}

_STAR = r"\*\d+[A-Z]?"
_DIPLOTYPE = re.compile(rf"(?:CYP2C9\s*)?({_STAR})\s*/\s*(?:CYP2C9\s*)?({_STAR})")
_HAPLOTYPE = re.compile(rf"(?:CYP2C9\s*)?({_STAR})$")
_SNP = re.compile(r"(rs\d+)\D*?([ACGT])\s*/\s*([ACGT])\b")


@dataclass(frozen=True)
class Call:
    """One genomic result: ``marker`` is ``"cyp2c9"`` or ``"vkorc1_<IWPC marker>"``."""

    kind: str  # genotype | haplotype | variant
    gene: str | None
    marker: str | None
    call: str | None  # diplotype, haplotype, or SNP genotype; None when not interpreted
    raw: str | None


def star_key(allele: str) -> tuple[int, str]:
    m = re.match(r"\*(\d+)(.*)", allele)
    return (int(m.group(1)), m.group(2)) if m else (10**6, allele)


def diplotype(a: str, b: str) -> str:
    """Two star alleles in IWPC's order: ``("*3", "*1")`` -> ``"*1/*3"``."""
    return "/".join(sorted((a, b), key=star_key))


def vkorc1_genotype(marker: str, a: str, b: str) -> str | None:
    """Two alleles (either strand) in IWPC's notation, or None if they are not the SNP's alleles."""
    _, ref, alt = VKORC1_SNPS[marker]
    coding = {ref, alt}
    genomic = {ref.translate(_COMPLEMENT), alt.translate(_COMPLEMENT)}
    if {a, b} <= genomic:  # the IG's convention first (it decides the palindromic rs8050894)
        a, b = a.translate(_COMPLEMENT), b.translate(_COMPLEMENT)
    elif not {a, b} <= coding:
        return None
    return "/".join(sorted((a, b)))


def genomic_alleles(marker: str, genotype: str) -> str:
    """IWPC's ``"A/G"`` at -1639 -> ``"C/T"`` on the genomic forward strand (for writing)."""
    return "/".join(sorted(genotype.translate(_COMPLEMENT).split("/")))


def cyp2c9_activity(diplo: str | None) -> float | None:
    if not diplo:
        return None
    alleles = diplo.split("/")
    if len(alleles) != 2 or any(a not in CYP2C9_ACTIVITY for a in alleles):
        return None
    return CYP2C9_ACTIVITY[alleles[0]] + CYP2C9_ACTIVITY[alleles[1]]


def cyp2c9_phenotype(diplo: str | None) -> str | None:
    """CPIC: activity score 2 normal, 1-1.5 intermediate, 0-0.5 poor metaboliser; else indeterminate."""
    if not diplo:
        return None
    score = cyp2c9_activity(diplo)
    if score is None:
        return "Indeterminate"
    return "Normal metabolizer" if score >= 2 else "Intermediate metabolizer" if score >= 1 else "Poor metabolizer"


def _text(cc) -> str | None:
    if cc is None:
        return None
    for c in cc.coding or ():
        if c.display or c.code:
            return c.display or c.code
    return cc.text


def _concept_texts(cc) -> list[str]:
    if cc is None:
        return []
    out = [cc.text] if cc.text else []
    for c in cc.coding or ():
        out += [x for x in (c.code, c.display) if x]
    return out


def _gene(cc) -> str | None:
    for c in (cc.coding or ()) if cc else ():
        code = (c.code or "").removeprefix("HGNC:")
        if code in _HGNC_IDS:
            return _HGNC_IDS[code]
        if c.display:
            return c.display.upper()
    return cc.text.upper() if cc and cc.text else None


def _components(obs) -> dict[str, list]:
    out: dict[str, list] = {}
    for comp in obs.component or ():
        for c in comp.code.coding or ():
            if c.code:
                out.setdefault(c.code, []).append(comp)
    return out


def interpret(obs, code: str) -> Call:
    """The call of one genotype, haplotype or variant Observation (``obs`` is validated)."""
    comps = _components(obs)
    genes = {g for comp in comps.get(t.GENE_STUDIED, []) if (g := _gene(comp.valueCodeableConcept))}
    texts = _concept_texts(obs.valueCodeableConcept) + ([obs.valueString] if obs.valueString else [])
    raw = texts[0] if texts else None
    if code == t.VARIANT:
        return _variant(comps, genes, raw)
    if any("CYP2C9" in x for x in texts):
        genes = {"CYP2C9"}
    elif any("VKORC1" in x for x in texts):
        genes = {"VKORC1"}
    gene = next(iter(genes)) if len(genes) == 1 else None
    kind = "genotype" if code == t.GENOTYPE else "haplotype"
    if gene == "CYP2C9":
        pattern = _DIPLOTYPE if code == t.GENOTYPE else _HAPLOTYPE
        for x in texts:
            if m := pattern.search(x):
                value = diplotype(m.group(1), m.group(2)) if code == t.GENOTYPE else m.group(1)
                return Call(kind, gene, "cyp2c9", value, raw)
    if gene == "VKORC1" and code == t.GENOTYPE:
        for x in texts:
            if (m := _SNP.search(x)) and m.group(1) in _RSID_TO_MARKER:
                marker = _RSID_TO_MARKER[m.group(1)]
                value = vkorc1_genotype(marker, m.group(2), m.group(3))
                if value:
                    return Call(kind, gene, f"vkorc1_{marker}", value, raw)
    return Call(kind, gene, None, None, raw)


def _variant(comps: dict[str, list], genes: set[str], raw: str | None) -> Call:
    gene = next(iter(genes)) if len(genes) == 1 else None
    rsids = [_text(c.valueCodeableConcept) for c in comps.get(t.DBSNP_ID, [])]
    rsid = rsids[0] if len(rsids) == 1 else None
    ref = next((c.valueString for c in comps.get(t.REF_ALLELE, []) if c.valueString), None)
    alt = next((c.valueString for c in comps.get(t.ALT_ALLELE, []) if c.valueString), None)
    state = next((x for c in comps.get(t.ALLELIC_STATE, []) for x in _concept_texts(c.valueCodeableConcept)), "")
    present = raw in ("Present", t.PRESENT)
    absent = raw in ("Absent", t.ABSENT)
    if present and (t.HOMOZYGOUS in state or "homozygous" in state.lower()):
        n_alt = 2
    elif present and (t.HETEROZYGOUS in state or "heterozygous" in state.lower()):
        n_alt = 1
    else:
        n_alt = 0 if absent else None
    if rsid in CYP2C9_VARIANTS and n_alt is not None:
        return Call("variant", "CYP2C9", f"cyp2c9:{rsid}", str(n_alt), raw)
    if rsid in _RSID_TO_MARKER and n_alt is not None and ref and alt:
        marker = _RSID_TO_MARKER[rsid]
        value = vkorc1_genotype(marker, *([ref] * (2 - n_alt) + [alt] * n_alt))
        return Call("variant", "VKORC1", f"vkorc1_{marker}" if value else None, value, raw)
    return Call("variant", gene, None, None, raw)


def cyp2c9_from_variants(alt_counts: dict[str, int]) -> str | None:
    """Diplotype from variant allele counts (both *2 and *3 variants must have been tested)."""
    if not {"rs1799853", "rs1057910"} <= alt_counts.keys():
        return None
    alleles = [CYP2C9_VARIANTS[rs] for rs, n in alt_counts.items() for _ in range(n)]
    if len(alleles) > 2:
        return None
    alleles += ["*1"] * (2 - len(alleles))
    return diplotype(*alleles)
