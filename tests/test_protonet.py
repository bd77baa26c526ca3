import numpy as np
import pytest
import torch

from medmeta.learners import PrototypicalNetwork, load_learner
from medmeta.learners.protonet import prototypes
from medmeta.protocol import meta_train_pool
from medmeta.tasks import EpisodeSampler


def test_prototypes_are_class_means():
    z = torch.tensor([[0.0, 0], [2, 0], [0, 4], [0, 6]])
    assert torch.equal(prototypes(z, torch.tensor([0, 0, 1, 1]), 2), torch.tensor([[1.0, 0], [0, 5]]))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_any_image_size_and_probabilities(distance):
    learner = PrototypicalNetwork(in_channels=1, hidden=16, distance=distance)
    sx, qx = torch.rand(6, 1, 64, 64), torch.rand(4, 1, 64, 64)
    proba = learner.predict_proba(sx, np.array([0, 0, 1, 1, 2, 2]), qx)
    assert proba.shape == (4, 3) and np.allclose(proba.sum(1), 1)


def test_meta_training_learns_and_survives_save_load(tmp_path):
    x, keys = meta_train_pool("train", channels=3)
    vx, vkeys = meta_train_pool("val", channels=3)
    val = EpisodeSampler(vkeys, 5, 5, 5, seed=1)
    val_tasks = [val.task(vx) for _ in range(30)]

    learner = PrototypicalNetwork(hidden=32, max_episodes=60, seed=0)
    before = learner.score(val_tasks)
    learner.meta_fit(EpisodeSampler(keys, 5, 5, 5, seed=0).tasks(x), show_progress=False)
    after = learner.score(val_tasks)
    assert learner.history_["episodes"] == 60
    assert after.mean > before.mean + 0.05, (before, after)
    assert after.mean > 0.5  # chance is 0.2

    saved = load_learner(learner.save(tmp_path / "model"))
    t = val_tasks[0]
    assert np.allclose(saved.predict_proba(t.support_x, t.support_y, t.query_x),
                       learner.predict_proba(t.support_x, t.support_y, t.query_x), atol=1e-6)
    assert saved.get_params() == learner.get_params()


def test_unknown_learner_in_config_is_refused(tmp_path):
    d = PrototypicalNetwork(hidden=8).save(tmp_path / "m")
    (d / "config.json").write_text((d / "config.json").read_text().replace("PrototypicalNetwork", "os.system"))
    with pytest.raises(ValueError, match=r"unknown learner 'os\.system'"):
        load_learner(d)
