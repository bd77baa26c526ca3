import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from medmeta.evaluation import draw_episodes, episode_accuracies
from medmeta.learners import MAMLClassifier, MatchingNetwork, PrototypicalNetwork, load_learner
from medmeta.learners.base import rotated
from medmeta.learners.baselines import ClassifierBaseline, FineTuneBaseline
from medmeta.learners.encoders import make_encoder
from medmeta.learners.protonet import contrastive_loss, triplet_loss
from medmeta.protocol import meta_train_pool
from medmeta.tasks import EpisodeSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_images(n_per_class: int = 30, n_classes: int = 6, channels: int = 3, size: int = 28, seed: int = 0):
    """Classes that differ by where a bright square sits: learnable in a few episodes."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_per_class * n_classes, channels, size, size)).astype(np.float32) * 0.3
    y = np.repeat(np.arange(n_classes), n_per_class)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 3)
        x[i, :, 3 + 10 * r: 9 + 10 * r, 3 + 8 * col: 9 + 8 * col] = 1.0
    return torch.from_numpy(x), y


def test_metric_losses_are_zero_when_classes_are_apart_and_positive_when_mixed():
    y = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1]])
    mixed = torch.tensor([[1.0, 0], [0, 1], [1, 0.01], [0.01, 1]])
    assert triplet_loss(apart, y, margin=0.5) == 0
    assert triplet_loss(mixed, y, margin=0.5) > 0.5
    assert contrastive_loss(apart, y, margin=1.0) < 0.01
    assert contrastive_loss(mixed, y, margin=1.0) > 0.3


@pytest.mark.parametrize("make", [
    lambda: PrototypicalNetwork(in_channels=1, hidden=16, distance="cosine"),
    lambda: PrototypicalNetwork(in_channels=1, hidden=16, loss="triplet"),
    lambda: MatchingNetwork(in_channels=1, hidden=16),
    lambda: MatchingNetwork(in_channels=1, hidden=16, fce=False),
    lambda: MatchingNetwork(in_channels=1, hidden=16, backbone="resnet"),
])
def test_remembered_support_answers_like_the_episode(make):
    learner = make().eval()
    sx, qx = torch.rand(6, 1, 36, 36), torch.rand(4, 1, 36, 36)  # any size
    sy = np.array([0, 0, 1, 1, 2, 2])
    proba = learner.predict_proba(sx, sy, qx)
    assert proba.shape == (4, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    learner.remember(sx, sy, ["a", "b", "c"])
    assert learner.classes_ == ["a", "b", "c"] and learner.get_params()["n_classes"] == 3
    with torch.no_grad():
        assert np.allclose(learner(qx).softmax(1).numpy(), proba, atol=1e-5)
        scripted = torch.jit.script(learner)
        assert torch.allclose(scripted(qx), learner(qx), atol=1e-5)


@pytest.mark.parametrize("cls", [PrototypicalNetwork, MatchingNetwork])
def test_a_checkpoint_of_any_support_size_loads_and_the_saved_learner_matches(cls, tmp_path):
    learner = cls(in_channels=3, hidden=16).eval()
    learner.remember(torch.rand(10, 3, 28, 28), np.repeat(np.arange(5), 2), list("vwxyz"))
    fresh = cls(in_channels=3, hidden=16)  # empty support buffers
    fresh.load_state_dict(learner.state_dict())
    q = torch.rand(3, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(q), learner(q), atol=1e-6)
    saved = load_learner(learner.save(tmp_path / "m"))
    assert saved.classes_ == list("vwxyz")
    with torch.no_grad():
        assert torch.allclose(saved(q), learner(q), atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: PrototypicalNetwork(in_channels=3, hidden=16, distance="cosine", loss="contrastive", margin=1.0),
    lambda: MatchingNetwork(in_channels=3, hidden=16, rotation_weight=0.5, augment=True),
])
def test_pretraining_then_meta_training_learns_and_keeps_the_best_validation_weights(make):
    x, keys = meta_train_pool("train", channels=3)  # the embedded samples: 14 classes
    vx, vkeys = meta_train_pool("val", channels=3)
    learner = make()
    learner.pretrain_epochs, learner.max_episodes, learner.validate_every = 3, 20, 10
    learner.n_query = 5
    episodes = draw_episodes(vkeys, 5, 5, 5, 40, seed=3)
    before = episode_accuracies(learner, vx, episodes).mean()
    learner.fit(x, keys, vx, vkeys, show_progress=False)
    after = episode_accuracies(learner, vx, episodes).mean()
    h = learner.history_
    assert h["pretrain"]["classes"] == 14 and h["episodes"] == 20
    assert h["pretrain"]["rotation_weight"] == learner.rotation_weight
    assert [e for e, _ in h["validation"]] == [0, 10, 20]
    assert h["best_validation_accuracy"] == max(a for _, a in h["validation"])
    assert after > max(before + 0.05, 0.6), (before, after)  # chance is 0.2


def test_logistic_regression_baseline_is_scikit_learns_classifier():
    learner = ClassifierBaseline(in_channels=1, hidden=16, head="logreg").eval()
    for n_way in (2, 3):
        sx, qx = torch.rand(4 * n_way, 1, 28, 28), torch.rand(5, 1, 28, 28)
        sy = np.repeat(np.arange(n_way), 4)
        zs = torch.nn.functional.normalize(learner.embed_images(sx)).numpy()
        zq = torch.nn.functional.normalize(learner.embed_images(qx)).numpy()
        expected = LogisticRegression(max_iter=1000).fit(zs, sy).predict_proba(zq)
        assert np.allclose(learner.predict_proba(sx, sy, qx), expected, atol=1e-4)


def test_fine_tuning_baseline_adapts_per_task_without_changing_the_learner():
    x, y = toy_images(n_per_class=10)
    learner = FineTuneBaseline(in_channels=3, hidden=16, steps=5).eval()
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    episode = EpisodeSampler(y, 3, 2, 3, seed=0).sample()
    proba = learner.predict_proba(x[episode.support], episode.support_labels, x[episode.query])
    assert proba.shape == (9, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in learner.state_dict().items())
    assert not learner.embeds_independently


@pytest.mark.parametrize("backbone", ["conv4", "resnet"])
def test_the_encoder_splits_into_trunk_and_top(backbone):
    encoder = make_encoder(backbone, 3, 16, 4).eval()
    trunk, top = encoder.split()
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(top(trunk(x)), encoder(x), atol=1e-6)


def test_rotation_task_turns_each_image_by_its_label():
    x = torch.rand(12, 1, 5, 5)
    turned, turns = rotated(x, torch.Generator().manual_seed(0))
    assert set(turns.tolist()) == {0, 1, 2, 3}
    for image, out, k in zip(x, turned, turns.tolist(), strict=True):
        assert torch.equal(out, torch.rot90(image, k, (1, 2)))


def test_fine_tuning_everything_also_works():
    x, _ = toy_images(n_per_class=6, n_classes=3, channels=1)
    learner = FineTuneBaseline(in_channels=1, hidden=8, steps=2, finetune="all", augment=True)
    proba = learner.predict_proba(x[:6], np.repeat(np.arange(3), 2), x[6:9])
    assert proba.shape == (3, 3)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="loss"):
        PrototypicalNetwork(loss="hinge")
    with pytest.raises(ValueError, match="encoder"):
        PrototypicalNetwork(backbone="vit")
    with pytest.raises(ValueError, match="4 stages"):
        MatchingNetwork(backbone="resnet", depth=3)
    with pytest.raises(ValueError, match="head"):
        ClassifierBaseline(head="svm")


@pytest.mark.parametrize("first_order", [True, False])
def test_maml_learns_an_initialisation_that_adapts_to_unseen_classes(first_order, tmp_path):
    x, y = toy_images(n_per_class=20, n_classes=6)
    train = y < 4  # meta-train on four square positions, test 2-way on the other two
    episodes = draw_episodes(y[~train], 2, 5, 5, 20, seed=1)
    learner = MAMLClassifier(hidden=16, depth=3, first_order=first_order, inner_steps=3, n_way=3, k_shot=5,
                             n_query=5, max_episodes=25 if first_order else 3)
    before = episode_accuracies(learner, x[~train], episodes).mean()
    learner.meta_fit(EpisodeSampler(y[train], 3, 5, 5, seed=0).tasks(x[train]), show_progress=False)
    assert learner.history_["episodes"] == learner.max_episodes
    if first_order:  # the zero-initialised head starts at chance; after meta-training a few steps suffice
        assert before == pytest.approx(0.5) and episode_accuracies(learner, x[~train], episodes).mean() >= 0.85
    saved = load_learner(learner.save(tmp_path / "maml"))
    assert isinstance(saved, MAMLClassifier) and saved.first_order is first_order
    ep = episodes[0]
    assert np.allclose(saved.predict_proba(x[~train][ep.support], ep.support_labels, x[~train][ep.query]),
                       learner.predict_proba(x[~train][ep.support], ep.support_labels, x[~train][ep.query]), atol=1e-5)
    with pytest.raises(NotImplementedError, match="no deployable support state"):
        learner.remember(x[:4], np.array([0, 0, 1, 1]))
