import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.datasets.warfarin import load_iwpc
from medmeta.models import model_dir
from medmeta.treatment.iwpc import (
    VKORC1_RULES,
    impute_vkorc1,
    iwpc_clinical_dose,
    iwpc_pharmacogenetic_dose,
    race_category,
)
from medmeta.treatment.warfarin import WarfarinDoseModel
from medmeta.treatment.warfarin_eval import dosed, evaluate, recalibrated_iwpc, score_table, within20
from medmeta.treatment.warfarin_features import patient_groups, warfarin_features

#: The columns the FHIR adapters reproduce: the model may read nothing else.
CONTRACT = [
    "subject_id", "sex", "race", "ethnicity", "age_decade", "height_cm", "weight_kg", "indication_dvt", "indication_pe",
    "indication_afib", "indication_heart_valve", "indication_cardiomyopathy", "indication_stroke",
    "indication_post_orthopedic", "indication_other", "diabetes", "heart_failure", "valve_replacement", "aspirin",
    "acetaminophen", "acetaminophen_over_1300mg", "simvastatin", "atorvastatin", "fluvastatin", "lovastatin",
    "pravastatin", "rosuvastatin", "cerivastatin", "amiodarone", "carbamazepine", "phenytoin", "rifampin",
    "sulfonamide_antibiotics", "macrolide_antibiotics", "antifungal_azoles", "herbal_supplements", "target_inr",
    "reached_stable_dose", "dose_mg_week", "inr_on_dose", "current_smoker", "cyp2c9", "vkorc1_1639", "vkorc1_497",
    "vkorc1_1173", "vkorc1_1542", "vkorc1_3730", "vkorc1_2255", "vkorc1_4451",
]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sample(samples):
    return load_iwpc(samples / "iwpc_warfarin" / "warfarin.csv").data


@pytest.fixture(scope="module")
def shipped():
    return WarfarinDoseModel.load(model_dir("warfarin"))


def test_iwpc_algorithms_reproduce_the_published_check(full_data):
    """On the 4,426 dosed patients here: MAE 13.2 / 10.1 / 8.4 mg/week and 30 / 38 / 46% within 20%.

    (We get 13.17 / 10.05 / 8.40 and 29.8 / 38.3 / 46.0%: the clinical MAE is 0.001 below the rounding
    boundary of the quoted 10.1, well inside what the choice of imputation for missing height moves.)
    """
    frame = dosed(load_iwpc(full_data / "iwpc_warfarin" / "warfarin.csv").data)
    assert len(frame) == 4426
    y = frame["dose_mg_week"].astype(float).to_numpy()
    got = [(np.mean(np.abs(p - y)), within20(y, p))
           for p in (np.full(len(y), 35.0), iwpc_clinical_dose(frame), iwpc_pharmacogenetic_dose(frame))]
    np.testing.assert_allclose([m for m, _ in got], [13.2, 10.1, 8.4], atol=0.055)
    np.testing.assert_allclose([w for _, w in got], [30, 38, 46], atol=0.5)


def test_vkorc1_imputation_follows_the_appendix_rules():
    frame = pd.DataFrame({
        "race": ["White", "Black or African American", "Black or African American", "Asian", "Unknown", "White"],
        "vkorc1_1639": [None, None, None, "G/G", None, None],
        "vkorc1_2255": ["T/T", "T/T", None, "T/T", "C/C", None],
        "vkorc1_1173": [None, None, "T/C", None, None, None],
        "vkorc1_1542": [None, None, None, None, "C/C", "G/C"],
    })
    value, source = impute_vkorc1(frame)
    assert value.tolist() == ["A/A", None, "A/G", "G/G", None, "A/G"]
    assert source.tolist() == ["vkorc1_2255", "missing", "vkorc1_1173", "genotyped", "missing", "vkorc1_1542"]


def test_vkorc1_rules_hold_where_both_markers_were_genotyped(full_data):
    """The rules are checked on the data: >= 97% concordance with the measured -1639 genotype."""
    frame = load_iwpc(full_data / "iwpc_warfarin" / "warfarin.csv").data
    race = race_category(frame)
    for column, races, mapping in VKORC1_RULES:
        rows = frame[frame["vkorc1_1639"].notna() & frame[column].notna()
                     & (race.isin(races) if races else True)]
        agree = (rows[column].astype(str).map(mapping) == rows["vkorc1_1639"].astype(str)).mean()
        assert agree > 0.97 and len(rows) > 500, (column, agree, len(rows))


def test_features_read_only_the_contract_columns(sample):
    full = warfarin_features(sample)
    narrow = warfarin_features(sample[CONTRACT].copy())
    assert full.names == narrow.names
    np.testing.assert_array_equal(full.values, narrow.values)
    # genotypes in another allele order, as another source may write them
    swapped = sample[CONTRACT].copy()
    swapped["cyp2c9"] = swapped["cyp2c9"].str.split("/").str[::-1].str.join("/")
    np.testing.assert_array_equal(warfarin_features(swapped).values, full.values)


def test_untrained_network_is_the_iwpc_formula(sample):
    model = WarfarinDoseModel(members=2, meta_steps=0).fit(sample)
    np.testing.assert_allclose(model.predict(sample), iwpc_pharmacogenetic_dose(sample), rtol=0.01)


def test_fit_predict_suggest_save_load(sample, tmp_path):
    model = WarfarinDoseModel(members=2, meta_steps=20, hidden=(8,)).fit(sample)
    again = WarfarinDoseModel(members=2, meta_steps=20, hidden=(8,)).fit(sample)
    np.testing.assert_array_equal(model.predict(sample), again.predict(sample))  # deterministic

    s = model.suggest(sample.head(20))
    assert (s["dose_mg_week"] > 0).all()
    assert ((s["interval90_low_mg_week"] <= s["interval80_low_mg_week"])
            & (s["interval80_low_mg_week"] <= s["dose_mg_week"])
            & (s["dose_mg_week"] <= s["interval80_high_mg_week"])
            & (s["interval80_high_mg_week"] <= s["interval90_high_mg_week"])).all()
    assert s["subject_id"].tolist() == sample["subject_id"].head(20).tolist()
    assert "not an order" in s["disclaimer"].iloc[0]

    loaded = WarfarinDoseModel.load(model.save(tmp_path / "w"))
    np.testing.assert_allclose(loaded.predict(sample), model.predict(sample), rtol=1e-6)
    pd.testing.assert_frame_equal(loaded.suggest(sample.head(5)), model.suggest(sample.head(5)))


def test_adaptation_uses_only_dosed_support(sample):
    model = WarfarinDoseModel(members=2, meta_steps=10, hidden=(8,)).fit(sample)
    support = sample.head(30).copy()
    adapted = model.adapt(support)
    with_undosed = support.copy()
    with_undosed.loc[with_undosed.index[:5], "dose_mg_week"] = pd.NA
    np.testing.assert_allclose(model.adapt(with_undosed.iloc[5:]).predict(sample),
                               model.adapt(with_undosed).predict(sample))
    assert not np.allclose(adapted.predict(sample), model.predict(sample))  # it did adapt


def test_shipped_model_names_the_factors_that_moved_the_dose(shipped, sample):
    patient = sample.iloc[[0]].copy()
    for column in ("vkorc1_1639", "vkorc1_2255", "vkorc1_1173", "vkorc1_1542"):
        patient[column] = pd.NA
    sensitive, resistant = patient.copy(), patient.copy()
    sensitive["vkorc1_1639"], resistant["vkorc1_1639"] = "A/A", "G/G"
    sensitive["cyp2c9"] = "*3/*3"
    sensitive["amiodarone"] = True
    low, high = shipped.predict(sensitive)[0], shipped.predict(resistant)[0]
    assert low < 0.5 * high
    top = shipped.suggest(sensitive)["top_factors"].iloc[0]
    assert {f["factor"] for f in top} >= {"VKORC1", "CYP2C9"}
    assert all(f["effect_mg_week"] < 0 for f in top if f["factor"] in ("VKORC1", "CYP2C9", "amiodarone"))
    assert next(f for f in top if f["factor"] == "VKORC1")["value"] == "-1639 A/A"
    sparse = shipped.suggest(pd.DataFrame({"subject_id": ["x"], "race": ["Asian"], "vkorc1_1639": ["A/A"]}))
    assert sparse["missing_inputs"].iloc[0] == ["age", "height", "weight", "CYP2C9", "amiodarone",
                                               "enzyme inducer"]


def test_recalibrated_iwpc_shifts_to_the_support(sample):
    rows = dosed(sample)
    support = rows.head(40).copy()
    support["dose_mg_week"] = support["dose_mg_week"].astype(float) * 1.5
    assert np.median(recalibrated_iwpc(rows, support) / iwpc_pharmacogenetic_dose(rows)) > 1.2


def test_score_table_gives_differences_with_intervals():
    rng = np.random.default_rng(0)
    y = rng.uniform(10, 70, 300)
    race = np.where(np.arange(300) % 2, "White", "Asian")
    table = score_table(y, {"iwpc_pharmacogenetic": y * 1.3, "medmeta": y * 1.1}, race, n_boot=200)
    m = table["medmeta"]
    assert m["overall"]["within20"]["value"] == 100.0 and table["iwpc_pharmacogenetic"]["overall"]["within20"][
        "value"] == 0.0
    lo, hi = m["overall"]["mae_minus_iwpc_pharmacogenetic"]["ci95"]
    assert hi < 0 and lo <= m["overall"]["mae_minus_iwpc_pharmacogenetic"]["value"] <= hi
    assert set(m["by_race"]) == {"White", "Asian"} and set(m["by_dose_band"]) <= {"<21", "21-49", ">49"}


def test_evaluate_scores_everything_on_the_same_patients(shipped, sample):
    result = evaluate(sample, shipped, n_boot=100)
    n = result["patients_with_dose"]
    assert n == int(dosed(sample).shape[0])
    assert {m: e["overall"]["n"] for m, e in result["methods"].items()} == {
        "medmeta": n, "fixed_35": n, "iwpc_clinical": n, "iwpc_pharmacogenetic": n}
    assert set(result["intervals"]) == {"80%", "90%"}
    assert result["adaptation_by_race"]["groups_scored"]  # at least one race with > 60 patients


def test_cli_eval_writes_json(tmp_path, samples):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["warfarin", "eval", "--input", str(samples / "iwpc_warfarin" / "warfarin.csv"),
                                      "--json", str(out), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["methods"]["iwpc_pharmacogenetic"]["overall"]["n"] == data["patients_with_dose"]


def test_groups_are_race_and_indication(sample):
    groups = patient_groups(sample)
    assert groups.str.contains(r"^(?:White|Asian|Black or African American|Unknown)\|").all()


@pytest.mark.slow
def test_cross_validated_model_beats_the_iwpc_algorithm(full_data):
    """3-fold patient-level CV on the full IWPC file: lower MAE and more patients within 20% than IWPC PGx."""
    from medmeta.treatment.warfarin_eval import cross_validate

    frame = load_iwpc(full_data / "iwpc_warfarin" / "warfarin.csv").data
    result = cross_validate(frame, folds=3, seed=11, shots=(0, 20), n_boot=200)
    ours = result["methods"]["medmeta"]["overall"]
    assert ours["mae_minus_iwpc_pharmacogenetic"]["value"] < 0
    assert ours["within20_minus_iwpc_pharmacogenetic"]["value"] > 0
    assert 75 < result["intervals"]["80%"]["value"] < 85 and 86 < result["intervals"]["90%"]["value"] < 94


def test_same_suggestions_from_fhir_records(shipped, samples, tmp_path):
    """IWPC CSV -> FHIR resources -> the adapters' frame: the model suggests exactly what it does from the CSV."""
    from medmeta.fhir import iwpc_frame, read

    csv = samples / "iwpc_warfarin" / "warfarin.csv"
    result = CliRunner().invoke(app, ["fhir", "from-iwpc", str(csv), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    from_fhir = iwpc_frame(read(tmp_path)).head(60).reset_index(drop=True)
    from_csv = load_iwpc(csv).data.head(60)
    pd.testing.assert_frame_equal(shipped.suggest(from_fhir), shipped.suggest(from_csv))
