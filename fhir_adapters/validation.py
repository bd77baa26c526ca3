"""Fast, focused validation of the resources medmeta reads.

Full ``fhir.resources`` validation runs at about 1,400 resources/s; these slim pydantic models
check only what the tables use (required elements, JSON types, dates, codes, references) and
that no element name is unknown to FHIR R4, at tens of thousands of resources per second.
Everything medmeta *writes* is validated with the full ``fhir.resources.R4B`` models instead
(:mod:`medmeta.fhir.writers`).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from fhir.resources.R4B import get_fhir_model_class
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

_DATETIME = re.compile(
    r"(?!0000)\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])"
    r"(T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?"
)
_DATE = re.compile(r"(?!0000)\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?")


def _datetime(v: str) -> str:
    if not _DATETIME.fullmatch(v):
        raise ValueError("not a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or a date-time with a time zone)")
    if len(v) >= 10:
        date.fromisoformat(v[:10])  # rejects 2021-02-30
    return v


def _date(v: str) -> str:
    if not _DATE.fullmatch(v):
        raise ValueError("not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)")
    if len(v) == 10:
        date.fromisoformat(v)
    return v


DateTime = Annotated[str, AfterValidator(_datetime)]
Date = Annotated[str, AfterValidator(_date)]
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]
Code = Annotated[str, StringConstraints(pattern=r"^\S+( \S+)*$")]
Str = Annotated[str, StringConstraints(min_length=1)]  # FHIR strings are never empty
Uri = Annotated[str, StringConstraints(pattern=r"^\S+$")]


class _Element(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Datatype(_Element):
    """A FHIR datatype modelled in full: an unknown element inside it is an error, as in fhir.resources."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: Str | None = None
    extension: list[dict] | None = None


def _ext(name: str) -> Any:
    """The ``_name`` element that carries a primitive's id and extensions."""
    return Field(None, alias=f"_{name}")


class Coding(_Datatype):
    system: Uri | None = None
    version: Str | None = None
    code: Code | None = None
    display: Str | None = None
    userSelected: bool | None = None
    system_ext: dict | None = _ext("system")
    version_ext: dict | None = _ext("version")
    code_ext: dict | None = _ext("code")
    display_ext: dict | None = _ext("display")


class CodeableConcept(_Datatype):
    coding: list[Coding] | None = None
    text: Str | None = None
    text_ext: dict | None = _ext("text")


class Reference(_Datatype):
    reference: Str | None = None
    type: Uri | None = None
    identifier: dict | None = None
    display: Str | None = None
    reference_ext: dict | None = _ext("reference")
    display_ext: dict | None = _ext("display")


class Quantity(_Datatype):
    value: float | None = None
    unit: Str | None = None
    system: Uri | None = None
    code: Code | None = None
    comparator: Literal["<", "<=", ">=", ">"] | None = None
    value_ext: dict | None = _ext("value")
    unit_ext: dict | None = _ext("unit")
    code_ext: dict | None = _ext("code")


class Range(_Datatype):
    low: Quantity | None = None
    high: Quantity | None = None


class Period(_Datatype):
    start: DateTime | None = None
    end: DateTime | None = None
    start_ext: dict | None = _ext("start")
    end_ext: dict | None = _ext("end")


class Extension(_Element):
    url: Uri
    valueCoding: Coding | None = None
    valueString: Str | None = None
    valueCode: Code | None = None
    extension: list[Extension] | None = None


class _Valued(_Element):
    valueQuantity: Quantity | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueString: Str | None = None
    valueBoolean: bool | None = None
    valueInteger: int | None = None
    valueRange: Range | None = None
    # kept as text, not as numbers (medmeta.fhir.normalise reports them)
    valueRatio: dict | None = None
    valueSampledData: dict | None = None
    valueTime: Str | None = None
    valueDateTime: DateTime | None = None
    valuePeriod: Period | None = None


class Component(_Valued):
    code: CodeableConcept


class _Resource(_Element):
    id: Id | None = None


class Patient(_Resource):
    resourceType: Literal["Patient"]
    gender: Literal["male", "female", "other", "unknown"] | None = None
    birthDate: Date | None = None
    deceasedBoolean: bool | None = None
    deceasedDateTime: DateTime | None = None
    extension: list[Extension] | None = None


class Observation(_Resource, _Valued):
    resourceType: Literal["Observation"]
    status: Literal["registered", "preliminary", "final", "amended", "corrected", "cancelled",
                    "entered-in-error", "unknown"]
    code: CodeableConcept
    subject: Reference | None = None
    effectiveDateTime: DateTime | None = None
    effectiveInstant: DateTime | None = None
    effectivePeriod: Period | None = None
    issued: DateTime | None = None
    component: list[Component] | None = None
    derivedFrom: list[Reference] | None = None


class Condition(_Resource):
    resourceType: Literal["Condition"]
    code: CodeableConcept | None = None
    clinicalStatus: CodeableConcept | None = None
    verificationStatus: CodeableConcept | None = None
    subject: Reference
    onsetDateTime: DateTime | None = None
    onsetPeriod: Period | None = None
    abatementDateTime: DateTime | None = None
    abatementPeriod: Period | None = None
    recordedDate: DateTime | None = None
    # not dates: the table's columns stay empty and medmeta.fhir.normalise reports them
    onsetAge: dict | None = None
    onsetRange: dict | None = None
    onsetString: Str | None = None
    abatementAge: dict | None = None
    abatementRange: dict | None = None
    abatementString: Str | None = None


class Repeat(_Element):
    frequency: int | None = None
    period: float | None = None
    periodUnit: Literal["s", "min", "h", "d", "wk", "mo", "a"] | None = None


class Timing(_Element):
    repeat: Repeat | None = None


class DoseAndRate(_Element):
    doseQuantity: Quantity | None = None
    doseRange: Range | None = None


class Dosage(_Element):
    text: Str | None = None
    timing: Timing | None = None
    doseAndRate: list[DoseAndRate] | None = None


class _Medication(_Resource):
    medicationCodeableConcept: CodeableConcept | None = None
    medicationReference: Reference | None = None
    subject: Reference
    reasonCode: list[CodeableConcept] | None = None
    reasonReference: list[Reference] | None = None


class MedicationRequest(_Medication):
    resourceType: Literal["MedicationRequest"]
    status: Literal["active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft",
                    "unknown"]
    intent: Literal["proposal", "plan", "order", "original-order", "reflex-order", "filler-order",
                    "instance-order", "option"]
    authoredOn: DateTime | None = None
    dosageInstruction: list[Dosage] | None = None


class MedicationStatement(_Medication):
    resourceType: Literal["MedicationStatement"]
    status: Literal["active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown",
                    "not-taken"]
    effectiveDateTime: DateTime | None = None
    effectivePeriod: Period | None = None
    dateAsserted: DateTime | None = None
    dosage: list[Dosage] | None = None


class GoalTarget(_Element):
    measure: CodeableConcept | None = None
    detailQuantity: Quantity | None = None


class Goal(_Resource):
    resourceType: Literal["Goal"]
    lifecycleStatus: Literal["proposed", "planned", "accepted", "active", "on-hold", "completed", "cancelled",
                             "entered-in-error", "rejected"]
    description: CodeableConcept
    subject: Reference
    target: list[GoalTarget] | None = None


class Attachment(_Datatype):
    contentType: Code | None = None
    language: Code | None = None
    data: Str | None = None  # base64
    url: Uri | None = None
    size: int | None = None
    hash: Str | None = None
    title: Str | None = None
    creation: DateTime | None = None


class Media(_Resource):
    resourceType: Literal["Media"]
    status: Literal["preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
                    "entered-in-error", "unknown"]
    type: CodeableConcept | None = None
    modality: CodeableConcept | None = None
    subject: Reference
    createdDateTime: DateTime | None = None
    bodySite: CodeableConcept | None = None
    content: Attachment


MODELS: dict[str, type[_Resource]] = {
    m.__name__: m for m in (Patient, Observation, Condition, MedicationRequest, MedicationStatement, Goal, Media)
}
#: The resource types that fill medmeta's tables.
USED_TYPES = frozenset(MODELS)


def _element_names(resource_type: str) -> frozenset[str]:
    fields = get_fhir_model_class(resource_type).model_fields.values()
    return frozenset({"resourceType"} | {f.alias for f in fields if f.alias and f.alias != "fhir_comments"})


_NAMES = {t: _element_names(t) for t in MODELS}
# value[x] and other choice elements: at most one of each group may be present.
_CHOICES = {
    "Observation": ("value", "effective"),
    "Condition": ("onset", "abatement"),
    "MedicationRequest": ("medication",),
    "MedicationStatement": ("medication", "effective"),
    "Media": ("created",),
}


def validate(resource: dict[str, Any]) -> tuple[Any, str | None]:
    """Check a used resource: ``(model, None)`` when valid, ``(None, reason)`` when not."""
    rtype = resource.get("resourceType")
    model = MODELS[rtype]
    unknown = resource.keys() - _NAMES[rtype]
    if unknown:
        return None, f"unknown element(s) {sorted(unknown)} for {rtype}"
    for prefix in _CHOICES.get(rtype, ()):
        chosen = [k for k in resource if k.startswith(prefix) and k[len(prefix):len(prefix) + 1].isupper()]
        if len(chosen) > 1:
            return None, f"more than one {prefix}[x]: {chosen}"
    try:
        return model.model_validate(resource), None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return None, f"{where}: {err['msg']}{more}"
