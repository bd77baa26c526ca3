"""Validated resources -> tidy pandas tables with stable columns.

:class:`Normaliser` takes one resource at a time (so a source streams through it) and keeps
compact rows; :meth:`Normaliser.finish` checks what needs the whole source (references to
patients) and returns the :class:`FhirTables`. Every resource read is counted as used,
ignored (a type no table holds) or rejected (with a :class:`~medmeta.errors.Rejection`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pandas as pd

from medmeta.errors import Rejection
from medmeta.fhir import genomics
from medmeta.fhir import terminology as t
from medmeta.fhir.sources import Entry, is_resource_type
from medmeta.fhir.units import CANONICAL, to_canonical
from medmeta.fhir.validation import USED_TYPES, validate

COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("patient_id", "gender", "birth_date", "deceased", "deceased_time", "race", "ethnicity", "age"),
    "observations": ("observation_id", "patient_id", "time", "code", "system", "display", "panel_code", "value",
                     "unit", "value_raw", "unit_raw", "value_code", "value_text", "status"),
    "conditions": ("condition_id", "patient_id", "code", "system", "display", "codes", "clinical_status",
                   "verification_status", "onset", "abatement", "recorded"),
    "medications": ("medication_id", "resource_type", "patient_id", "code", "system", "display", "codes",
                    "status", "intent", "time", "end", "dose", "dose_unit", "frequency", "period",
                    "period_unit", "dosage_text", "reason_codes", "reason_ids"),
    "goals": ("goal_id", "patient_id", "measure_code", "target_value", "target_unit", "status", "description"),
    "genotypes": ("observation_id", "patient_id", "time", "kind", "gene", "marker", "call", "raw"),
    "images": ("media_id", "patient_id", "time", "content_type", "modality", "body_site", "title", "data", "url"),
}
_TIME_COLUMNS = {"birth_date", "deceased_time", "time", "onset", "abatement", "recorded", "end"}
_FLOAT_COLUMNS = {"age", "value", "value_raw", "dose", "period", "target_value"}
_BOOL_COLUMNS = {"deceased"}
_INT_COLUMNS = {"frequency"}
_OWNER = {"Patient": "patients", "Observation": "observations", "Condition": "conditions",
          "MedicationRequest": "medications", "MedicationStatement": "medications", "Goal": "goals",
          "Media": "images"}
_PREFERRED = {"observations": t.LOINC, "conditions": t.SNOMED, "medications": t.RXNORM, "goals": t.LOINC}
PGX_COLUMNS = ("patient_id", "cyp2c9", "cyp2c9_activity_score", "cyp2c9_phenotype",
               *(f"vkorc1_{m}" for m in genomics.VKORC1_SNPS))


@dataclass
class Counts:
    """Resources read, per type, and what became of them: read = used + ignored + rejected."""

    read: Counter = field(default_factory=Counter)
    used: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    #: files of the source that were not read, with why.
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        return {k: sum(getattr(self, k).values()) for k in ("read", "used", "ignored", "rejected")}

    def add_up(self) -> bool:
        s = self.totals()
        return s["read"] == s["used"] + s["ignored"] + s["rejected"]

    def summary(self) -> str:
        s = self.totals()
        return (f"read {s['read']:,} = used {s['used']:,} + ignored {s['ignored']:,} (types no table holds)"
                f" + rejected {s['rejected']:,}")

    def to_dict(self) -> dict[str, Any]:
        by_type = {k: {n: getattr(self, n)[k] for n in ("read", "used", "ignored", "rejected")}
                   for k in sorted(self.read)}
        return {**self.totals(), "by_type": by_type, "skipped_files": [list(x) for x in self.skipped_files]}


@dataclass
class FhirTables:
    """The normalised tables of a FHIR source, the rejected resources and the counts."""

    patients: pd.DataFrame
    observations: pd.DataFrame
    conditions: pd.DataFrame
    medications: pd.DataFrame
    goals: pd.DataFrame
    genotypes: pd.DataFrame
    #: images attached to the record (FHIR Media): inline base64 ``data`` or a ``url``.
    images: pd.DataFrame
    #: one row per patient with genomic results: CYP2C9 diplotype, activity score, phenotype, VKORC1 SNPs.
    pgx: pd.DataFrame
    rejected: list[Rejection]
    counts: Counts
    #: codes and units kept as they were (not standardised), with counts and an example resource.
    unmapped: pd.DataFrame

    TABLES = ("patients", "observations", "conditions", "medications", "goals", "genotypes", "images", "pgx")

    def for_patients(self, ids: Iterable[str]) -> FhirTables:
        """The rows of these patients only (rejections, counts and unmapped codes stay those of the whole read)."""
        keep = set(map(str, ids))
        return replace(self, **{name: getattr(self, name)[getattr(self, name)["patient_id"].astype(str).isin(keep)]
                                .reset_index(drop=True) for name in self.TABLES})


def _concept(cc, preferred: str | None) -> tuple[str | None, str | None, str | None]:
    """(system, code, display) of the preferred system's coding, else the first; text if no coding."""
    if cc is None:
        return None, None, None
    codings = cc.coding or []
    chosen = next((c for c in codings if c.system == preferred), codings[0] if codings else None)
    if chosen is None:
        return None, None, cc.text
    return chosen.system, chosen.code, chosen.display or cc.text


#: The value[x] choices of Observation (and its components): those the tables hold as values, and those kept
#: as text (and reported). Together, every R4 choice of Observation.value[x].
TABLE_VALUES = ("valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger", "valueRange")
TEXT_VALUES = ("valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod")


def _as_text(value) -> str:
    """A FHIR element (a model, a JSON object or a primitive) as compact text."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", exclude_none=True, by_alias=True)
    return orjson.dumps(value).decode() if isinstance(value, dict) else str(value)


def _all_codes(cc) -> str | None:
    if cc is None or not cc.coding:
        return None
    return " ".join(f"{c.system or ''}|{c.code or ''}" for c in cc.coding)


def _first_code(cc) -> str | None:
    if cc is None or not cc.coding:
        return None
    return cc.coding[0].code


class _Rows:
    """Rows of one table, turned into DataFrame chunks as they accumulate (memory stays small)."""

    CHUNK = 50_000

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.rows: list[tuple] = []
        self.chunks: list[pd.DataFrame] = []

    def add(self, row: tuple) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.chunks.append(pd.DataFrame.from_records(self.rows, columns=list(self.columns)))
            self.rows = []

    def frame(self) -> pd.DataFrame:
        self.flush()
        if not self.chunks:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in self.columns})
        return pd.concat(self.chunks, ignore_index=True) if len(self.chunks) > 1 else self.chunks[0]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for c in frame.columns:
        if c in _TIME_COLUMNS:
            frame[c] = pd.to_datetime(frame[c], format="ISO8601", utc=True)
        elif c in _FLOAT_COLUMNS:
            frame[c] = pd.to_numeric(frame[c]).astype("float64")
        elif c in _BOOL_COLUMNS:
            frame[c] = frame[c].astype("boolean")
        elif c in _INT_COLUMNS:
            frame[c] = pd.to_numeric(frame[c]).astype("Int64")
        else:
            frame[c] = frame[c].astype("string")
    return frame


class Normaliser:
    """Accumulates the rows of the tables from a stream of :class:`~medmeta.fhir.sources.Entry`."""

    def __init__(self) -> None:
        self.rows = {name: _Rows(cols) for name, cols in COLUMNS.items()}
        self.counts = Counts()
        self.rejected: list[Rejection] = []
        self.unmapped: dict[tuple, list] = {}
        self._seen: dict[tuple[str, str], tuple[str, int | None]] = {}
        # (type, id, patient id, source, row) of resources whose patient must exist.
        self._needs_patient: list[tuple[str, str, str, str, int | None]] = []
        self._rejected_patients: set[str] = set()

    # -- bookkeeping -------------------------------------------------------------------------------------
    def _reject(self, e: Entry, rtype: str, reason: str, rid: str | None = None, fld: str | None = None) -> None:
        self.counts.rejected[rtype] += 1
        self.rejected.append(Rejection(e.source, reason, row=e.row, field=fld, record_id=rid))

    def _note(self, table: str, issue: str, system: str | None, code: str | None, unit: str | None,
              rid: str) -> None:
        item = self.unmapped.setdefault((table, issue, system, code, unit), [0, rid])
        item[0] += 1

    def _patient_id(self, ref, urls: dict[str, str]) -> str:
        """``Patient/x``, ``urn:uuid:x`` (in a Bundle) or ``http://.../Patient/x`` -> ``x``."""
        if ref is None or not ref.reference:
            raise ValueError("no subject reference: cannot attribute it to a patient")
        r = urls.get(ref.reference, ref.reference)
        parts = r.split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) < 2 or parts[-2] != "Patient" or "?" in r:
            raise ValueError(f"subject {ref.reference!r} is not a reference to a Patient")
        return parts[-1]

    # -- the stream --------------------------------------------------------------------------------------
    def add(self, e: Entry) -> None:
        """Validate and normalise one entry, or record why it was rejected."""
        r = e.resource
        if r is None:
            self.counts.read["(unparsed)"] += 1
            self._reject(e, "(unparsed)", e.error or "unreadable")
            return
        rtype = r.get("resourceType")
        rid = r.get("id") if isinstance(r.get("id"), str) else None
        label = rtype if isinstance(rtype, str) and rtype else "(no resourceType)"
        self.counts.read[label] += 1
        if not isinstance(rtype, str) or not rtype:
            self._reject(e, label, "missing resourceType", rid, "resourceType")
            return
        if rtype not in USED_TYPES:
            if is_resource_type(rtype):
                self.counts.ignored[rtype] += 1
            else:
                self._reject(e, label, f"invalid resourceType {rtype!r}", rid, "resourceType")
            return
        model, reason = validate(r)
        if model is None:
            self._reject(e, rtype, reason, rid, reason.split(":")[0] if reason.count(":") else None)
            if rtype == "Patient" and rid is not None:
                self._rejected_patients.add(rid)
            return
        if rid is None:
            self._reject(e, rtype, "missing id", None, "id")
            return
        first = self._seen.get((rtype, rid))
        if first is not None:
            where = f"{first[0]}, {'line/entry ' + str(first[1]) if first[1] else ''}".rstrip(", ")
            self._reject(e, rtype, f"duplicate id (first read in {where})", rid, "id")
            return
        try:
            getattr(self, f"_{rtype.lower()}")(model, e)
        except ValueError as exc:
            self._reject(e, rtype, str(exc), rid)
            return
        self._seen[(rtype, rid)] = (e.source, e.row)
        self.counts.used[rtype] += 1

    def _patient(self, p, e: Entry) -> None:
        race = ethnicity = None
        for ext in p.extension or ():
            if ext.url in (t.US_CORE_RACE, t.US_CORE_ETHNICITY):
                parts = {x.url: x for x in ext.extension or ()}
                text = parts["text"].valueString if "text" in parts else None
                if text is None and "ombCategory" in parts and parts["ombCategory"].valueCoding:
                    text = parts["ombCategory"].valueCoding.display
                if ext.url == t.US_CORE_RACE:
                    race = text
                else:
                    ethnicity = text
        deceased = True if p.deceasedDateTime else p.deceasedBoolean
        self.rows["patients"].add((p.id, p.gender, p.birthDate, deceased, p.deceasedDateTime, race, ethnicity,
                                   None))

    def _observation(self, o, e: Entry) -> None:
        pid = self._patient_id(o.subject, e.urls)
        system, code, display = _concept(o.code, t.LOINC)
        if system == t.LOINC and code in t.GENOMIC_CODES:
            self._genomic(o, pid, code, e)
            return
        time = o.effectiveDateTime or o.effectiveInstant or (o.effectivePeriod.start if o.effectivePeriod else None)
        rows = []
        if any(getattr(o, k) is not None for k in TABLE_VALUES + TEXT_VALUES) or not o.component:
            rows.append((code, system, display, None, o))
        for comp in o.component or ():
            csys, ccode, cdisp = _concept(comp.code, t.LOINC)
            rows.append((ccode, csys, cdisp, code, comp))
        out = []
        for rcode, rsys, rdisp, panel, holder in rows:
            value = self._value(holder, rcode if rsys == t.LOINC else None, o.id, rsys)
            out.append((o.id, pid, time, rcode, rsys, rdisp, panel, *value, o.status))
        for row in out:
            self.rows["observations"].add(row)
        if system != t.LOINC:
            self._note("observations", "code not LOINC", system, code, None, o.id)
        self._needs_patient.append(("Observation", o.id, pid, e.source, e.row))

    def _value(self, holder, loinc: str | None, rid: str, system: str | None) -> tuple:
        """(value, unit, value_raw, unit_raw, value_code, value_text) of a value[x]."""
        q = holder.valueQuantity
        if q is not None:
            if q.value is None:
                return None, None, None, None, None, None
            unit = q.code if q.code and q.system in (None, t.UCUM) else q.unit
            converted = to_canonical(loinc, q.value, unit)
            if isinstance(converted, str):
                raise ValueError(converted)
            if loinc not in CANONICAL:
                self._note("observations", "unit not standardised (no rule for this code)", system, loinc, unit, rid)
            return converted[0], converted[1], q.value, unit, None, None
        if holder.valueCodeableConcept is not None:
            cc = holder.valueCodeableConcept
            return None, None, None, None, _first_code(cc), cc.text or _concept(cc, None)[2]
        if holder.valueBoolean is not None:
            return None, None, None, None, str(holder.valueBoolean).lower(), None
        if holder.valueInteger is not None:
            return float(holder.valueInteger), None, float(holder.valueInteger), None, None, None
        if holder.valueString is not None:
            return None, None, None, None, None, holder.valueString
        if holder.valueRange is not None:
            lo, hi = holder.valueRange.low, holder.valueRange.high
            text = f"{lo.value if lo else ''}..{hi.value if hi else ''} {(lo or hi).unit if (lo or hi) else ''}"
            return None, None, None, None, None, text.strip()
        other = next((k for k in TEXT_VALUES if getattr(holder, k, None) is not None), None)
        if other is not None:  # Ratio, SampledData, Time, DateTime, Period: kept as text, and reported
            self._note("observations", f"{other} kept as text (no numeric value)", system, loinc, None, rid)
            return None, None, None, None, None, _as_text(getattr(holder, other))
        return None, None, None, None, None, None

    def _genomic(self, o, pid: str, code: str, e: Entry) -> None:
        call = genomics.interpret(o, code)
        time = o.effectiveDateTime or o.effectiveInstant or (o.effectivePeriod.start if o.effectivePeriod else None)
        self.rows["genotypes"].add((o.id, pid, time, call.kind, call.gene, call.marker, call.call, call.raw))
        if call.call is None:
            self._note("genotypes", f"{call.kind} not interpreted", t.LOINC, code, None, o.id)
        self._needs_patient.append(("Observation", o.id, pid, e.source, e.row))

    def _condition(self, c, e: Entry) -> None:
        pid = self._patient_id(c.subject, e.urls)
        system, code, display = _concept(c.code, t.SNOMED)
        onset = c.onsetDateTime or (c.onsetPeriod.start if c.onsetPeriod else None)
        abatement = c.abatementDateTime or ((c.abatementPeriod.end or c.abatementPeriod.start)
                                            if c.abatementPeriod else None)
        for choice in ("onsetAge", "onsetRange", "onsetString", "abatementAge", "abatementRange", "abatementString"):
            if getattr(c, choice) is not None:  # not a date: the column stays empty, and that is reported
                self._note("conditions", f"{choice} is not a date (see clinical_status)", system, code, None, c.id)
        self.rows["conditions"].add((c.id, pid, code, system, display, _all_codes(c.code),
                                     _first_code(c.clinicalStatus), _first_code(c.verificationStatus),
                                     onset, abatement, c.recordedDate))
        if system != t.SNOMED:
            self._note("conditions", "code not SNOMED CT", system, code, None, c.id)
        self._needs_patient.append(("Condition", c.id, pid, e.source, e.row))

    def _medication(self, m, e: Entry, rtype: str, intent, time, end, dosages) -> None:
        pid = self._patient_id(m.subject, e.urls)
        if (m.medicationCodeableConcept is None) == (m.medicationReference is None):
            raise ValueError("needs exactly one of medicationCodeableConcept and medicationReference")
        if m.medicationCodeableConcept is not None:
            system, code, display = _concept(m.medicationCodeableConcept, t.RXNORM)
        else:
            system, code, display = None, None, m.medicationReference.display
            self._note("medications", "medicationReference: the drug's code is not read (display kept)", None,
                       m.medicationReference.reference, None, m.id)
        dose = dose_unit = frequency = period = period_unit = text = None
        if dosages:
            d = dosages[0]
            text = d.text
            q = next((x.doseQuantity for x in d.doseAndRate or () if x.doseQuantity), None)
            if q is not None:
                dose, dose_unit = q.value, q.code or q.unit
            dose_range = next((x.doseRange for x in d.doseAndRate or () if x.doseRange), None)
            if q is None and dose_range is not None:
                text = text or _as_text(dose_range)
                self._note("medications", "doseRange kept as text (no single dose)", system, code, None, m.id)
            if d.timing and d.timing.repeat:
                rep = d.timing.repeat
                frequency, period, period_unit = rep.frequency, rep.period, rep.periodUnit
        reason_codes = " ".join(c for cc in m.reasonCode or () if (c := _first_code(cc))) or None
        reason_ids = " ".join(r.reference.split("/")[-1] for r in m.reasonReference or ()
                              if r.reference) or None
        self.rows["medications"].add((m.id, rtype, pid, code, system, display,
                                      _all_codes(m.medicationCodeableConcept), m.status, intent, time, end,
                                      dose, dose_unit, frequency, period, period_unit, text, reason_codes,
                                      reason_ids))
        if system != t.RXNORM:
            self._note("medications", "code not RxNorm", system, code, None, m.id)
        self._needs_patient.append((rtype, m.id, pid, e.source, e.row))

    def _medicationrequest(self, m, e: Entry) -> None:
        self._medication(m, e, "MedicationRequest", m.intent, m.authoredOn, None, m.dosageInstruction)

    def _medicationstatement(self, m, e: Entry) -> None:
        p = m.effectivePeriod
        time = m.effectiveDateTime or (p.start if p else None) or m.dateAsserted
        self._medication(m, e, "MedicationStatement", None, time, p.end if p else None, m.dosage)

    def _goal(self, g, e: Entry) -> None:
        pid = self._patient_id(g.subject, e.urls)
        target = next((x for x in g.target or () if x.detailQuantity is not None), None)
        measure = _concept(target.measure, t.LOINC)[1] if target and target.measure else None
        q = target.detailQuantity if target else None
        self.rows["goals"].add((g.id, pid, measure, q.value if q else None, (q.code or q.unit) if q else None,
                                g.lifecycleStatus, g.description.text or _concept(g.description, None)[2]))
        self._needs_patient.append(("Goal", g.id, pid, e.source, e.row))

    def _media(self, m, e: Entry) -> None:
        pid = self._patient_id(m.subject, e.urls)
        c = m.content
        if not (c.data or c.url):
            raise ValueError("Media.content has neither data nor url")
        self.rows["images"].add((m.id, pid, m.createdDateTime, c.contentType, _concept(m.modality, None)[1],
                                 _concept(m.bodySite, t.SNOMED)[2], c.title, c.data, c.url))
        self._needs_patient.append(("Media", m.id, pid, e.source, e.row))

    # -- the end -----------------------------------------------------------------------------------------
    def finish(self) -> FhirTables:
        """Reject resources whose patient is absent, type the columns, derive ages and pharmacogenomics."""
        frames = {name: rows.frame() for name, rows in self.rows.items()}
        patients = set(frames["patients"]["patient_id"].astype(str))
        orphans: dict[str, set[str]] = defaultdict(set)
        for rtype, rid, pid, source, row in self._needs_patient:
            if pid not in patients:
                orphans[_OWNER[rtype]].add(rid)
                self.counts.used[rtype] -= 1
                self.counts.rejected[rtype] += 1
                why = (f"its patient {pid!r} was rejected (see that Patient)" if pid in self._rejected_patients
                       else f"patient {pid!r} is not in the source")
                self.rejected.append(Rejection(source, why, row=row, field="subject", record_id=rid))
        for table, ids in orphans.items():
            for name in (table, "genotypes") if table == "observations" else (table,):
                key = COLUMNS[name][0]
                frames[name] = frames[name][~frames[name][key].isin(ids)].reset_index(drop=True)
        frames = {name: _typed(f) for name, f in frames.items()}
        frames["patients"]["age"] = _ages(frames)
        unmapped = pd.DataFrame(
            [(*k, v[0], v[1]) for k, v in sorted(self.unmapped.items(), key=lambda kv: -kv[1][0])],
            columns=["table", "issue", "system", "code", "unit", "count", "example_id"],
        )
        return FhirTables(**frames, pgx=pharmacogenomics(frames["genotypes"]), rejected=self.rejected,
                          counts=self.counts, unmapped=unmapped)


def measurements(obs: pd.DataFrame) -> pd.DataFrame:
    """Observations that are measurements: status final, amended or corrected (forecasts are preliminary)."""
    return obs[obs["status"].isin(t.MEASURED)]


def taken_medications(meds: pd.DataFrame) -> pd.DataFrame:
    """Medication records that say a drug is or was given: not proposals, plans or drafts (such as medmeta's)."""
    return meds[~(meds["intent"].isin(t.NOT_TAKEN_INTENTS) | meds["status"].isin(t.NOT_TAKEN_STATUSES))]


def _ages(frames: dict[str, pd.DataFrame]) -> pd.Series:
    """Age in years at death, else at the patient's latest dated record."""
    p = frames["patients"]
    times = [f[["patient_id", c]].rename(columns={c: "t"}) for name, f in frames.items() for c in ("time", "onset")
             if c in f.columns and name != "patients" and len(f)]
    last = pd.concat(times).groupby("patient_id")["t"].max() if times else pd.Series(dtype="datetime64[us, UTC]")
    last_seen = pd.to_datetime(last, utc=True).reindex(p["patient_id"].to_numpy()).set_axis(p.index)
    until = pd.to_datetime(p["deceased_time"], utc=True).fillna(last_seen)
    days = (until - p["birth_date"]).dt.total_seconds() / 86400.0
    return (days / 365.2425).astype("float64")


def pharmacogenomics(genotypes: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: CYP2C9 diplotype, CPIC activity score and phenotype, VKORC1 SNP genotypes.

    Per marker, a genotype Observation wins over haplotypes, which win over variants; the latest
    result wins among several of the same kind.
    """
    g = genotypes[genotypes["marker"].notna()].sort_values("time", kind="stable", na_position="first")
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for pid, rows in g.groupby("patient_id", sort=True):
        calls = {}
        for kind in ("variant", "haplotype", "genotype"):  # later kinds overwrite earlier ones
            sub = rows[rows["kind"] == kind]
            if kind == "variant":
                counts = {m.split(":")[1]: int(c) for m, c in zip(sub["marker"], sub["call"], strict=True)
                          if m.startswith("cyp2c9:")}
                if (d := genomics.cyp2c9_from_variants(counts)) is not None:
                    calls["cyp2c9"] = d
                calls.update({m: c for m, c in zip(sub["marker"], sub["call"], strict=True)
                              if m.startswith("vkorc1_")})
            elif kind == "haplotype":
                haps = sub[sub["marker"] == "cyp2c9"]["call"].tolist()
                if len(haps) == 2:
                    calls["cyp2c9"] = genomics.diplotype(*haps)
            else:
                calls.update(dict(zip(sub["marker"], sub["call"], strict=True)))
        out[pid] = calls
    frame = pd.DataFrame([{"patient_id": pid, **calls} for pid, calls in out.items()],
                         columns=[c for c in PGX_COLUMNS if c not in ("cyp2c9_activity_score", "cyp2c9_phenotype")])
    frame["cyp2c9_activity_score"] = frame["cyp2c9"].map(
        lambda d: genomics.cyp2c9_activity(d) if isinstance(d, str) else None).astype("float64")
    frame["cyp2c9_phenotype"] = frame["cyp2c9"].map(
        lambda d: genomics.cyp2c9_phenotype(d) if isinstance(d, str) else None)
    frame = frame[list(PGX_COLUMNS)]
    for c in PGX_COLUMNS:
        if c != "cyp2c9_activity_score":
            frame[c] = frame[c].astype("string")
    return frame
