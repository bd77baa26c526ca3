"""Meta-learning tasks from FHIR tables: one per patient (longitudinal) or one per population group.

:func:`patient_tasks`: each of a patient's outcome measurements (e.g. HbA1c) is an example whose
features are only what was recorded strictly *before* it (previous outcome, latest other
measurements, age, treatments started before it). The support set is the patient's earliest
``k_support`` examples and the query set the later ones, so nothing of the query's time can leak
into the support set or into any example's own features.

:func:`population_tasks`: patients grouped by an attribute (race, indication, ...); each group is a
task whose support set is ``k_support`` of its patients drawn with a seed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medmeta.fhir import terminology as t
from medmeta.fhir.normalise import FhirTables, measurements, taken_medications
from medmeta.tasks import Task

#: Diabetes medication classes of the Synthea data, matched by name in the medication's text.
DIABETES_TREATMENTS: dict[str, tuple[str, ...]] = {
    "metformin": ("metformin",),
    "insulin": ("insulin",),
    "sulfonylurea": ("glipizide", "glyburide", "glimepiride"),
    "other_antidiabetic": ("sitagliptin", "liraglutide", "canagliflozin", "empagliflozin", "pioglitazone"),
}


def _treatment_matrix(meds: pd.DataFrame, treatments: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    text = meds["display"].fillna("").str.lower()
    cls = pd.Series(pd.NA, index=meds.index, dtype="string")
    for name, words in treatments.items():
        hit = text.str.contains("|".join(rf"\b{re.escape(w)}" for w in words), regex=True)
        cls = cls.where(cls.notna() | ~hit, name)
    return meds.assign(treatment=cls).dropna(subset=["treatment", "time"])


class _Examples:
    """The feature rows of one source: what was recorded strictly before a time, per patient."""

    def __init__(self, tables: FhirTables, outcome: str, features: Sequence[str],
                 treatments: dict[str, tuple[str, ...]]) -> None:
        obs = measurements(tables.observations)
        obs = obs[(obs["system"] == t.LOINC) & obs["value"].notna() & obs["time"].notna()]
        self.outcomes = obs[obs["code"] == outcome].sort_values(["patient_id", "time"], kind="stable")
        self.feature_obs = {
            f: {pid: (g["time"].to_numpy(), g["value"].to_numpy(dtype=float))
                for pid, g in obs[obs["code"] == f].sort_values("time", kind="stable").groupby("patient_id")}
            for f in features}
        self.births = tables.patients.set_index("patient_id")["birth_date"]
        self.meds = _treatment_matrix(taken_medications(tables.medications), treatments)
        self.features, self.treatments = tuple(features), tuple(treatments)
        self.names = ["previous", "days_since_previous", *features, *(f"has_{f}" for f in features), "age",
                      *treatments]

    def row(self, pid: str, now: np.datetime64, times: np.ndarray, values: np.ndarray,
            pmeds: pd.DataFrame) -> tuple[list[float], np.datetime64] | None:
        """Features at ``now`` from the patient's outcomes (``times``, ``values``) strictly before it."""
        prev = np.flatnonzero(times < now)
        if len(prev) == 0:
            return None
        j = prev[-1]
        row = [values[j], (now - times[j]) / np.timedelta64(1, "D")]
        latest_used = times[j]
        vals, has = [], []
        for f in self.features:
            f_times, f_values = self.feature_obs[f].get(pid, (times[:0], values[:0]))
            n = int(np.searchsorted(f_times, now, side="left"))  # records strictly before now
            if n:
                vals.append(float(f_values[n - 1]))
                has.append(1.0)
                latest_used = max(latest_used, f_times[n - 1])
            else:
                vals.append(0.0)
                has.append(0.0)
        birth = self.births.get(pid, pd.NaT)
        age = (pd.Timestamp(now) - birth).days / 365.2425 if pd.notna(birth) else np.nan
        on = [float(((pmeds["treatment"] == name) & (pmeds["time"].to_numpy() <= now)
                     & ~(pmeds["end"].to_numpy() < now)).any()) for name in self.treatments]
        return row + vals + has + [age] + on, latest_used


def patient_tasks(tables: FhirTables, *, outcome: str = t.HBA1C, features: Sequence[str] = (t.GLUCOSE, "39156-5"),
                  treatments: dict[str, tuple[str, ...]] | None = None, k_support: int = 3, min_query: int = 1,
                  require_treatment: bool = False) -> list[Task]:
    """One task per patient with at least ``k_support + min_query`` examples of the ``outcome`` LOINC code.

    ``x`` columns (``metadata["features"]``): previous outcome value, days since it, the latest value of
    each of ``features`` before the example (0 when none, with a 0/1 "has_" column), age in years, and
    one 0/1 column per treatment class active at the example's time (a request or statement started
    at or before it, and not known to have ended before it; statuses are not used, since they describe
    the state at export time, after the example). ``y`` is the outcome value in its canonical unit.
    ``require_treatment`` keeps only patients ever on one of the treatments.
    """
    ex = _Examples(tables, outcome, features, DIABETES_TREATMENTS if treatments is None else treatments)
    tasks = []
    for pid, rows in ex.outcomes.groupby("patient_id", sort=True):
        pmeds = ex.meds[ex.meds["patient_id"] == pid]
        if require_treatment and pmeds.empty:
            continue
        times, values = rows["time"].to_numpy(), rows["value"].to_numpy(dtype=float)
        # distinct times only: an example needs a previous outcome strictly before it
        xs, ys, ts, used = [], [], [], []
        for i in range(1, len(times)):
            found = ex.row(pid, times[i], times, values, pmeds)
            if found is None:
                continue
            xs.append(found[0])
            ys.append(values[i])
            ts.append(times[i])
            used.append(found[1])
        if len(xs) < k_support + min_query:
            continue
        cut = ts[k_support - 1]
        query = [i for i in range(k_support, len(xs)) if ts[i] > cut]
        if len(query) < min_query:
            continue
        x, y = np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.float32)
        tasks.append(Task(x[:k_support], y[:k_support], x[query], y[query], {
            "patient_id": pid, "features": ex.names, "outcome": outcome,
            "support_times": np.asarray(ts[:k_support]), "query_times": np.asarray([ts[i] for i in query]),
            "feature_times": np.asarray(used[:k_support] + [used[i] for i in query]),
        }))
    return tasks


def forecast_examples(tables: FhirTables, when: dict[str, pd.Timestamp], *, outcome: str = t.HBA1C,
                      features: Sequence[str] = (t.GLUCOSE, "39156-5"),
                      treatments: dict[str, tuple[str, ...]] | None = None) -> dict[str, np.ndarray]:
    """The feature row (as in :func:`patient_tasks`) of each patient at a future time ``when[patient]``,
    built from what was recorded before it; patients with no earlier outcome are left out."""
    ex = _Examples(tables, outcome, features, DIABETES_TREATMENTS if treatments is None else treatments)
    out = {}
    for pid, rows in ex.outcomes.groupby("patient_id", sort=True):
        if pid not in when:
            continue
        now = pd.Timestamp(when[pid])
        now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
        times = rows["time"].to_numpy()
        pmeds = ex.meds[ex.meds["patient_id"] == pid]
        found = ex.row(pid, now, times, rows["value"].to_numpy(dtype=float), pmeds)
        if found is not None:
            out[str(pid)] = np.asarray(found[0], dtype=np.float32)
    return out


def population_tasks(frame: pd.DataFrame, group_by: str | pd.Series, target: str, features: Sequence[str], *,
                     k_support: int = 5, min_query: int = 1, seed: int = 0) -> list[Task]:
    """One task per group of patients (rows with a missing target or group are left out).

    ``group_by`` is a column of ``frame`` (``"race"``) or a Series on its index that derives the
    group (for the IWPC columns of FHIR records, :func:`medmeta.treatment.warfarin_features.indication_group`).
    ``features`` must be numeric columns; missing values become 0 with a 0/1 ``has_`` column each.
    The support set is ``k_support`` patients of the group drawn with ``seed``; the query set the rest.
    """
    rng = np.random.default_rng(seed)
    groups = frame[group_by] if isinstance(group_by, str) else group_by.reindex(frame.index)
    name = group_by if isinstance(group_by, str) else (group_by.name or "group")
    keep = frame[target].notna() & groups.notna()
    data = frame[keep]
    tasks = []
    for group, rows in data.groupby(groups[keep], sort=True):
        if len(rows) < k_support + min_query:
            continue
        values = rows[list(features)].astype("float64")
        x = np.hstack([values.fillna(0.0).to_numpy(), values.notna().to_numpy(dtype=float)]).astype(np.float32)
        y = rows[target].astype("float64").to_numpy(dtype=np.float32)
        order = rng.permutation(len(rows))
        s, q = order[:k_support], order[k_support:]
        ids = rows.index.to_numpy()
        tasks.append(Task(x[s], y[s], x[q], y[q], {
            "group": group, "group_by": name, "target": target,
            "features": [*features, *(f"has_{f}" for f in features)],
            "support_ids": ids[s], "query_ids": ids[q]}))
    return tasks
