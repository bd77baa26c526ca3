"""One canonical UCUM unit per LOINC code, and the conversions into it.

A value whose code has a canonical unit is converted into that unit; a unit that cannot be
converted is an error (never guessed). Codes without an entry keep their own value and unit
and are reported as not standardised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Canonical:
    unit: str
    #: lower-cased UCUM code (or unit text) -> conversion into ``unit``.
    convert: dict[str, Callable[[float], float]]


def _same(x: float) -> float:
    return x


def _factor(f: float) -> Callable[[float], float]:
    return lambda x: x * f


def _rule(unit: str, **others: Callable[[float], float]) -> Canonical:
    table = {unit.lower(): _same}
    table.update({k.lower(): v for k, v in others.items()})
    return Canonical(unit, table)


_MG_DL_MMOL = {"mmol/L": _factor(18.016)}  # glucose, 180.16 g/mol
_CHOL = {"mmol/L": _factor(38.67)}
_ELECTROLYTE = {"meq/L": _same, "mEq/L": _same}

_RULES: dict[tuple[str, ...], Canonical] = {
    ("2339-0", "2345-7", "15074-8", "2340-8", "41653-7", "14749-6", "99504-3"): _rule("mg/dL", **_MG_DL_MMOL),
    ("105272-9",): _rule("mmol/L", **{"mg/dL": _factor(1 / 18.016)}),  # CGM glucose, molar form
    ("4548-4", "17856-6", "4549-2"): _rule("%", **{"mmol/mol": lambda x: 0.09148 * x + 2.152}),
    ("8302-2", "8306-3", "3137-7"): _rule("cm", m=_factor(100.0), mm=_factor(0.1), **{"[in_i]": _factor(2.54)}),
    ("29463-7", "3141-9"): _rule("kg", g=_factor(0.001), **{"[lb_av]": _factor(0.45359237)}),
    ("39156-5",): _rule("kg/m2"),
    ("8480-6", "8462-4"): _rule("mm[Hg]", kPa=_factor(7.50062)),
    ("8310-5", "8331-1"): _rule("Cel", **{"[degF]": lambda x: (x - 32.0) * 5.0 / 9.0}),
    ("2093-3", "18262-6", "2085-9"): _rule("mg/dL", **_CHOL),
    ("2571-8",): _rule("mg/dL", **{"mmol/L": _factor(88.57)}),
    ("38483-4", "2160-0"): _rule("mg/dL", **{"umol/L": _factor(1 / 88.42)}),
    ("6299-2", "3094-0"): _rule("mg/dL", **{"mmol/L": _factor(2.801)}),
    ("2947-0", "2951-2", "6298-4", "2823-3", "2069-3", "2075-0", "20565-8", "2028-9"):
        _rule("mmol/L", **_ELECTROLYTE),
    ("34714-6", "6301-6"): _rule("{INR}", **{"1": _same, "{ratio}": _same}),
    ("718-7",): _rule("g/dL", **{"g/L": _factor(0.1)}),
    ("33914-3",): _rule("mL/min/{1.73_m2}"),
}

CANONICAL: dict[str, Canonical] = {code: rule for codes, rule in _RULES.items() for code in codes}


def to_canonical(code: str | None, value: float, unit: str | None) -> tuple[float, str | None] | str:
    """``(value, unit)`` in the canonical unit of ``code``, or the reason it cannot be converted.

    Codes without a rule pass through unchanged.
    """
    rule = CANONICAL.get(code or "")
    if rule is None:
        return value, unit
    if not unit:
        return f"value without a unit (LOINC {code} needs {rule.unit})"
    convert = rule.convert.get(unit.lower())
    if convert is None:
        return f"unit {unit!r} cannot be converted to {rule.unit} for LOINC {code}"
    return convert(value), rule.unit
