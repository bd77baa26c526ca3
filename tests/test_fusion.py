"""Multimodal fusion: masks, encoders, fusion layers, the estimator, both meta-learner families, inference API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import functional_call, vmap

from medmeta.errors import DataError
from medmeta.fusion import (
    FusedMetricClassifier,
    FusionModel,
    FusionNet,
    Modality,
    Multimodal,
    modality_dropout,
    predict_patient,
    predict_patients,
)
from medmeta.fusion.evaluation import patient_folds, score_table
from medmeta.learners.encoders import ConvEncoder
from medmeta.learners.maml import MAML
from medmeta.learners.protonet import PrototypicalNetwork
from medmeta.tasks import EpisodeSampler, Task

torch.set_num_threads(1)
CALLS = ("A/A", "A/G", "G/G")
MODALITIES = [Modality("ehr", "tabular", features=["f0", "f1", "f2", "f3"]),
              Modality("gene", "genotype", features=["m1", "m2"], categories=[CALLS, CALLS]),
              Modality("labs", "series", features=["hba1c", "glucose"], length=5)]


def toy(n: int = 400, seed: int = 0, p_missing: float = 0.25) -> tuple[Multimodal, np.ndarray]:
    """Three modalities that each carry a different part of the target (complementary information)."""
    rng = np.random.default_rng(seed)
    ehr = rng.normal(size=(n, 4)).astype(np.float32)
    gene = rng.integers(1, 4, size=(n, 2)).astype(np.float32)
    labs = rng.normal(size=(n, 2, 5)).astype(np.float32)
    labs[rng.random((n, 2, 5)) < 0.2] = np.nan  # unmeasured steps
    labs[:, 0, -1] = rng.normal(size=n)
    y = 1.0 * ehr[:, 0] + 1.0 * (gene[:, 0] == 3) + 1.0 * labs[:, 0, -1] + rng.normal(size=n) * 0.1
    mask = {m: rng.random(n) >= p_missing for m in ("ehr", "gene", "labs")}
    mask["ehr"] |= ~(mask["gene"] | mask["labs"])  # everyone has something
    return Multimodal({"ehr": ehr, "gene": gene, "labs": labs}, mask), y


# -- modalities and masks ---------------------------------------------------------------------------------------
def test_modality_specs_are_validated_and_round_trip():
    for m in MODALITIES:
        assert Modality.from_dict(m.to_dict()) == m
    with pytest.raises(ValueError, match="kind"):
        Modality("x", "audio", features=["a"])
    with pytest.raises(ValueError, match="lists of calls"):
        Modality("g", "genotype", features=["m1", "m2"], categories=[CALLS])
    with pytest.raises(ValueError, match="shape"):
        Modality("img", "image")
    assert MODALITIES[2].input_shape == (2, 5)


def test_records_with_missing_modalities_and_clear_errors():
    x = Multimodal.from_records(MODALITIES, [
        {"ehr": {"f0": 1.0, "f2": 2.0}, "gene": {"m1": "A/G"}},  # labs missing, m2 unknown
        {"labs": {"hba1c": [6.1, 6.3], "glucose": [100.0]}, "gene": None},
    ], ids=["p1", "p2"])
    assert x.mask["ehr"].tolist() == [True, False] and x.mask["labs"].tolist() == [False, True]
    assert np.isnan(x.data["ehr"][0, 1]) and x.data["ehr"][0, 0] == 1.0
    assert x.data["gene"][0].tolist() == [2.0, 0.0]  # "A/G" is call 2; unknown is 0
    assert np.allclose(x.data["labs"][1, 0, -2:], [6.1, 6.3]) and np.isnan(x.data["labs"][1, 0, 0])  # right-aligned
    assert not np.isnan(x.data["labs"][0]).any()  # a missing modality holds zeros, never NaN
    assert x.used() == [["ehr", "gene"], ["labs"]]
    with pytest.raises(DataError, match=r"record p9.*gene\.m1.*unknown call 'A/T'"):
        Multimodal.from_records(MODALITIES, [{"gene": {"m1": "A/T"}}], ids=["p9"])
    with pytest.raises(DataError, match=r"record p9.*ehr.*expected shape \(4,\)"):
        Multimodal.from_records(MODALITIES, [{"ehr": [1, 2]}], ids=["p9"])
    with pytest.raises(DataError, match=r"record p9.*unknown modalities \['mri'\]"):
        Multimodal.from_records(MODALITIES, [{"mri": [1]}], ids=["p9"])


def test_modality_dropout_keeps_one_and_never_adds():
    rng = np.random.default_rng(0)
    mask = rng.random((2000, 3)) < 0.7
    dropped = modality_dropout(mask, 0.5, rng)
    assert not (dropped & ~mask).any()
    assert (dropped.any(1) == mask.any(1)).all()
    rate = 1 - dropped[mask].mean()
    assert 0.35 < rate < 0.5  # about p, a little less because one modality is always kept


def test_indexing_withholding_and_tasks():
    x, y = toy(20)
    sub = x[np.array([3, 1])]
    assert len(sub) == 2 and sub.ids.tolist() == ["3", "1"]
    assert not x.without("gene").mask["gene"].any() and x.without("gene").mask["ehr"].tolist() == x.mask["ehr"].tolist()
    assert x.only("labs").names == x.names and not x.only("labs").mask["ehr"].any()
    task = Task(x[:5], y[:5], x[5:], y[5:])  # a multimodal task
    assert task.n_support == 5 and task.n_query == 15


# -- the network ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["late", "gated", "attention"])
def test_fusion_net_ignores_missing_modalities(fusion):
    x, _ = toy(50)
    net = FusionNet(MODALITIES, dim=8, fusion=fusion)
    net.fit_scaling(x)
    packed = net.pack(x)
    out, (z, w) = net(packed), net.fuse(packed)
    assert out.shape == (50, 1) and z.shape == (50, 8) and w.shape == (50, 3)
    present = torch.as_tensor(x.present(net.names), dtype=torch.float32)
    has = present.sum(1) > 0
    assert torch.allclose(w[has].sum(1), torch.ones(int(has.sum())), atol=1e-5)
    assert (w[present == 0] == 0).all()
    changed = x.data["gene"].copy()
    changed[~x.mask["gene"]] = 3.0  # whatever the data of a missing modality say, nothing changes
    other = Multimodal({**x.data, "gene": changed}, dict(x.mask))
    with torch.no_grad():
        assert torch.allclose(net(net.pack(other)), net(packed))
    assert torch.isfinite(out).all()


def test_fusion_net_runs_under_vmap_and_baseline_starts_at_it():
    x, _ = toy(30)
    net = FusionNet(MODALITIES, dim=8, baseline="labs.hba1c")
    net.fit_scaling(x)
    packed = net.pack(x)
    params = dict(net.named_parameters())
    batched = vmap(lambda p: functional_call(net, (params, dict(net.named_buffers())), (p,)))(packed.reshape(3, 10, -1))
    assert torch.allclose(batched.reshape(30, 1), net(packed), atol=1e-5)
    # zero-initialised correction: the output is the (standardised) last HbA1c where labs are present, else 0
    last = torch.as_tensor(x.data["labs"][:, 0, -1])
    expected = torch.where(torch.as_tensor(x.mask["labs"]), last, torch.zeros(30))
    assert torch.allclose(net(packed)[:, 0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="baseline"):
        FusionNet(MODALITIES, baseline="gene.m1")


# -- the estimator ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    x, y = toy(700)
    model = FusionModel(MODALITIES, fusion="gated", members=2, epochs=40, dim=16, seed=0).fit(x[:500], y[:500])
    return model, x[500:], y[500:]


def test_fusion_uses_complementary_modalities_and_any_subset(fitted):
    model, x, y = fitted
    full = x[np.flatnonzero(x.present().all(1))]
    yf = y[x.present().all(1)]
    mae = {name: np.mean(np.abs(model.predict(full, modalities=use) - yf))
           for name, use in (("all", None), ("ehr", ["ehr"]), ("gene", ["gene"]), ("labs", ["labs"]))}
    assert mae["all"] < 0.6 * min(mae["ehr"], mae["gene"], mae["labs"]), mae
    assert mae["all"] < np.mean(np.abs(yf - y.mean())) / 3


def test_intervals_are_calibrated_per_set_of_modalities(fitted):
    model, x, y = fitted
    assert set(model.calibration_) == {"ehr", "gene", "labs", "ehr+gene", "ehr+labs", "gene+labs", "ehr+gene+labs"}
    lo, hi = model.predict_interval(x)["0.8"]
    has = np.isfinite(lo)
    coverage = np.mean((y[has] >= lo[has]) & (y[has] <= hi[has]))
    assert 0.65 < coverage < 0.95, coverage
    keep = np.flatnonzero(x.present().all(1))
    one_lo, one_hi = model.predict_interval(x[keep].only("gene"))["0.8"]
    assert np.median(one_hi - one_lo) > 1.5 * np.median((hi - lo)[keep])  # less information, wider


def test_weights_transform_and_errors(fitted):
    model, x, _ = fitted
    w = model.modality_weights(x)
    assert list(w.columns) == ["ehr", "gene", "labs"] and np.allclose(w.to_numpy().sum(1), 1, atol=1e-5)
    assert model.transform(x).shape == (len(x), 2 * 16)
    nothing = x.without("ehr", "gene", "labs")
    with pytest.raises(DataError, match="none of the model's modalities"):
        model.predict(nothing)
    with pytest.raises(RuntimeError, match="not trained"):
        FusionModel(MODALITIES).predict(x)


def test_save_load_and_determinism(fitted, tmp_path):
    model, x, _ = fitted
    again = FusionModel(MODALITIES, fusion="gated", members=2, epochs=40, dim=16, seed=0).fit(*toy(700))
    model.save(tmp_path / "m")
    loaded = FusionModel.load(tmp_path / "m")
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert np.array_equal(loaded.predict_interval(x)["0.9"][0], model.predict_interval(x)["0.9"][0], equal_nan=True)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["params"] == model.get_params()
    assert FusionModel(**loaded.get_params()).get_params() == model.get_params()  # config-constructible
    first = FusionModel(MODALITIES, fusion="gated", members=2, epochs=40, dim=16, seed=0).fit(*toy(700))
    assert np.array_equal(first.predict(x), again.predict(x))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model": "WarfarinDoseModel"}')
    with pytest.raises(DataError, match="not a fusion model"):
        FusionModel.load(tmp_path / "bad")


def test_classification_and_bad_targets():
    x, y = toy(300)
    labels = np.where(y > np.median(y), "high", "low")
    model = FusionModel(MODALITIES, task="classification", members=2, epochs=30).fit(x[:200], labels[:200])
    proba = model.predict_proba(x[200:])
    assert proba.shape == (100, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert np.mean(model.predict(x[200:]) == labels[200:]) > 0.75
    with pytest.raises(DataError, match="out of range"):
        FusionModel(MODALITIES, target_transform="log").fit(x, y)  # negative targets


# -- imaging + EHR: wiring only (no data set pairs them) --------------------------------------------------------
class Embedder:
    """Not an nn.Module: anything with ``embed(images) -> (N, D)`` works (in eval mode: it is not switched)."""

    def __init__(self) -> None:
        self.learner = PrototypicalNetwork(in_channels=1, hidden=8, depth=2).eval()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.learner.embed(images)


@pytest.mark.parametrize("make", [lambda: ConvEncoder(1, 8, 2), Embedder], ids=["nn.Module", "embed()"])
def test_image_and_ehr_wiring(make, tmp_path):
    torch.manual_seed(0)
    backbone = make()
    mods = [Modality("image", "image", shape=(1, 28, 28)), Modality("ehr", "tabular", features=["age", "sex"])]
    rng = np.random.default_rng(0)
    n = 40
    images = rng.random((n, 1, 28, 28)).astype(np.float32)
    ehr = rng.normal(size=(n, 2)).astype(np.float32)
    y = ehr[:, 0] + images.mean((1, 2, 3))
    mask = {"image": np.arange(n) % 3 != 0, "ehr": np.arange(n) % 3 != 1}
    x = Multimodal({"image": images, "ehr": ehr}, mask)
    module = backbone if isinstance(backbone, torch.nn.Module) else backbone.learner
    before = {k: v.clone() for k, v in module.state_dict().items()}
    model = FusionModel(mods, members=2, epochs=3, dim=8, image_encoders={"image": backbone}).fit(x, y)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # the image encoder is frozen
    pred = model.predict(x)
    assert pred.shape == (n,) and np.isfinite(pred).all()
    assert model.modality_weights(x[np.array([0])])["image"].iloc[0] == 0  # row 0 has no image
    only_image = predict_patient(model, {"image": images[1]}, patient_id="img-only")
    assert only_image.modalities_used == ["image"] and only_image.modalities_missing == ["ehr"]
    only_ehr = predict_patient(model, {"ehr": {"age": 0.1, "sex": 1.0}, "image": None})
    assert only_ehr.modalities_used == ["ehr"]
    with pytest.raises(DataError, match=r"record empty.*none of the model's modalities"):
        predict_patient(model, {"image": None, "ehr": None}, patient_id="empty")
    with pytest.raises(DataError, match=r"image.*expected shape \(1, 28, 28\)"):
        predict_patient(model, {"image": images[1, 0]})
    model.save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"image_encoders=\{'image'"):
        FusionModel.load(tmp_path / "m")
    loaded = FusionModel.load(tmp_path / "m", image_encoders={"image": backbone})
    assert np.allclose(loaded.predict(x), pred)


# -- meta-learners ------------------------------------------------------------------------------------------------
def test_maml_adapts_only_the_fusion_head():
    x, y = toy(200)
    net = FusionNet(MODALITIES, dim=8)
    net.fit_scaling(x)
    packed = net.pack(x)
    tasks = [Task(packed[i:i + 5], y[i:i + 5, None], packed[i + 5:i + 20], y[i + 5:i + 20, None])
             for i in range(0, 180, 20)]
    maml = MAML(net, adapt=["head"], inner_steps=2, max_steps=5, meta_batch_size=4)
    assert set(maml.lrs()) == {n for n, _ in net.named_parameters() if n.startswith("head.")}
    maml.meta_fit(tasks, show_progress=False)
    adapted = maml.adapt(tasks[0])
    assert all(torch.equal(adapted.params[n], p) for n, p in maml.params().items() if not n.startswith("head."))
    assert any(not torch.equal(adapted.params[n], p) for n, p in maml.params().items() if n.startswith("head."))


def test_fusion_model_adapts_to_a_shifted_task_and_meta_fits(fitted, tmp_path):
    model, x, y = fitted
    shifted = y + 2.0  # a patient group whose values are all higher
    support, query = np.arange(20), np.arange(20, len(x))
    before = np.mean(np.abs(model.predict(x[query]) - shifted[query]))
    adapted = model.adapt(x[support], shifted[support], steps=20)
    after = np.mean(np.abs(adapted.predict(x[query]) - shifted[query]))
    assert after < 0.5 * before
    tasks = [Task(x[i:i + 5], y[i:i + 5] + s, x[i + 5:i + 20], y[i + 5:i + 20] + s)
             for i, s in zip(range(0, 180, 20), [-1.0, 0.0, 1.0] * 3, strict=True)]
    meta = FusionModel(MODALITIES, members=2, epochs=5, dim=8).fit(x, y)
    meta.meta_fit(tasks, meta_steps=3, meta_batch_size=3)
    assert meta.inner_lrs_ is not None and meta.training_["meta"]["tasks"] == 9
    assert np.isnan(meta.predict_interval(x[:5])["0.8"][0]).all()  # networks changed after calibration
    meta.save(tmp_path / "meta")
    loaded = FusionModel.load(tmp_path / "meta")
    assert all(torch.equal(loaded.inner_lrs_[1][k], v) for k, v in meta.inner_lrs_[1].items())
    assert np.allclose(loaded.adapt(x[:5], y[:5]).predict(x[5:10]), meta.adapt(x[:5], y[:5]).predict(x[5:10]))


def test_prototypes_and_matching_over_fused_embeddings():
    rng = np.random.default_rng(1)
    n = 600
    label = rng.integers(0, 4, n)  # class = (EHR bit, genotype bit): needs both modalities
    ehr = (rng.normal(size=(n, 4)) + 2.5 * (label % 2)[:, None]).astype(np.float32)
    gene = np.where(label >= 2, 3, 1)[:, None].repeat(2, 1).astype(np.float32)
    labs = rng.normal(size=(n, 2, 5)).astype(np.float32)
    x = Multimodal({"ehr": ehr, "gene": gene, "labs": labs}, {k: np.ones(n, dtype=bool) for k in ("ehr", "gene",
                                                                                                 "labs")})
    train, test = np.arange(400), np.arange(400, n)
    for method in ("prototypical", "matching"):
        net = FusionNet(MODALITIES, dim=16)
        net.fit_scaling(x)
        learner = FusedMetricClassifier(net, method=method, max_episodes=60, lr=3e-3, modality_dropout=0.0)
        learner.meta_fit(EpisodeSampler(label[train], 4, 5, 5, seed=0).tasks(x[train]))
        accuracy = learner.score(EpisodeSampler(label[test], 4, 5, 10, seed=1).tasks(x[test], 20))
        assert accuracy.mean > 0.8, (method, accuracy)
    model = FusionModel(MODALITIES, task="classification", members=2, epochs=20).fit(x[train], label[train])
    frozen = FusedMetricClassifier(model).score(EpisodeSampler(label[test], 4, 5, 10, seed=1).tasks(x[test], 10))
    assert frozen.mean > 0.8
    with pytest.raises(ValueError, match="trains a FusionNet"):
        FusedMetricClassifier(model).meta_fit([])


# -- inference API ------------------------------------------------------------------------------------------------
def test_predict_patients_reports_what_it_used_and_rejects_bad_records(fitted):
    model, _, _ = fitted
    records = [{"ehr": [0.1, 0.2, 0.3, 0.4], "gene": {"m1": "G/G", "m2": "A/A"}},
               {"labs": {"hba1c": [0.5, 0.2], "glucose": [1.0]}},
               {"gene": {"m1": "T/T"}},  # unknown call
               {}]  # nothing
    predictions, rejected = predict_patients(model, records, ids=["a", "b", "c", "d"])
    assert [p.patient_id for p in predictions] == ["a", "b"]
    assert predictions[0].modalities_used == ["ehr", "gene"] and predictions[0].modalities_missing == ["labs"]
    assert set(predictions[0].modality_weights) == {"ehr", "gene"}
    assert set(predictions[0].intervals) == {"80%", "90%"}
    lo, hi = predictions[0].intervals["80%"]
    assert lo <= predictions[0].prediction <= hi
    assert {r.record_id: r.field for r in rejected} == {"c": "gene.m1", "d": "modalities"}
    json.dumps([p.to_dict() for p in predictions])
    assert "not an order" in predictions[0].disclaimer


# -- evaluation ---------------------------------------------------------------------------------------------------
def test_patient_folds_and_paired_bootstrap():
    patients = np.array(["a", "a", "b", "c", "c", "c", "d"])
    folds = patient_folds(patients, folds=2, seed=0)
    assert all(len(set(folds[patients == p])) == 1 for p in patients)
    y = np.arange(7, dtype=float) + 10
    table = score_table(y, {"good": y + 0.5, "bad": y + 2.0}, patients, metrics=("mae", "rmse"),
                        references=("bad",), n_boot=200)
    assert table["good"]["mae"]["value"] == 0.5 and table["bad"]["rmse"]["value"] == 2.0
    diff = table["good"]["mae_minus_bad"]
    assert diff["value"] == -1.5 and diff["ci95"] == [-1.5, -1.5] and "mae_minus_bad" not in table["bad"]
    assert table["good"]["patients"] == 4
