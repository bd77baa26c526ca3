"""Code systems and the codes medmeta reads and writes (LOINC, SNOMED CT, RxNorm, HGNC, UCUM)."""

from __future__ import annotations

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
HGNC = "http://www.genenames.org"
PHARMVAR = "http://www.pharmvar.org"
DBSNP = "http://www.ncbi.nlm.nih.gov/projects/SNP"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
OMB_RACE_ETHNICITY = "urn:oid:2.16.840.1.113883.6.238"
US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
GENOMICS_IG = "http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition"
#: medmeta's own code system, for IWPC concepts that have no standard code (documented in docs/fhir.md).
MEDMETA_IWPC = "urn:medmeta:iwpc"

# LOINC codes of the genomics reporting IG.
GENOTYPE = "84413-4"
HAPLOTYPE = "84414-2"
VARIANT = "69548-6"
GENE_STUDIED = "48018-6"
DBSNP_ID = "81255-2"
REF_ALLELE = "69547-8"
ALT_ALLELE = "69551-0"
ALLELIC_STATE = "53034-5"
GENOMIC_CODES = frozenset({GENOTYPE, HAPLOTYPE, VARIANT})
HETEROZYGOUS = "LA6706-1"
HOMOZYGOUS = "LA6705-3"
PRESENT = "LA9633-4"
ABSENT = "LA9634-2"

# Other LOINC codes medmeta writes or uses.
HEIGHT = "8302-2"
WEIGHT = "29463-7"
AGE_GROUP = "46251-5"
SMOKING_STATUS = "72166-2"
INR = "34714-6"
HBA1C = "4548-4"
GLUCOSE = "2339-0"
BP_PANEL = "55284-4"
SYSTOLIC = "8480-6"
DIASTOLIC = "8462-4"

#: Tobacco smoking status answers (SNOMED CT) -> current smoker?
SMOKER = {
    "77176002": True, "449868002": True, "428041000124106": True, "428071000124103": True,
    "428061000124105": True, "65568007": True, "8392000": False, "8517006": False, "266919005": False,
}

#: Observation statuses of real measurements (not forecasts, which medmeta writes as "preliminary").
MEASURED = frozenset({"final", "amended", "corrected"})
#: MedicationRequest intents and statuses that do not say a drug is or was taken (e.g. medmeta's proposals).
NOT_TAKEN_INTENTS = frozenset({"proposal", "plan", "option"})
NOT_TAKEN_STATUSES = frozenset({"draft", "cancelled", "entered-in-error"})

#: RxNorm ingredient codes.
RXNORM_WARFARIN = "11289"
