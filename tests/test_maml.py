import json

import numpy as np
import pytest
import torch
from monai.networks.nets import FullyConnectedNet

from medmeta.learners.maml import MAML, load_maml, meta_gradient, stack_tasks
from medmeta.tasks import Task


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: thread pools only add contention (much slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sine_tasks(n, k=10, q=10, seed=0):
    """Few-shot regression: each task is a sine wave with its own amplitude and phase."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        a, phase = rng.uniform(0.5, 2), rng.uniform(0, np.pi)
        x = rng.uniform(-5, 5, (k + q, 1)).astype(np.float32)
        y = (a * np.sin(x + phase)).astype(np.float32)
        yield Task(x[:k], y[:k], x[k:], y[k:], {"amplitude": a})


def net(seed=0, hidden=(32, 32)):
    torch.manual_seed(seed)
    return FullyConnectedNet(1, 1, hidden, act="TANH")


def reference_meta_gradient(model, params, lrs, tasks, steps, first_order):
    """The same quantity written as a plain autograd loop over tasks."""
    ps = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    ls = {n: v.clone().requires_grad_(True) for n, v in lrs.items()}
    total = 0.0
    for t in tasks:
        fast = dict(ps)
        for _ in range(steps):
            loss = ((torch.func.functional_call(model, fast, (torch.tensor(t.support_x),))
                     - torch.tensor(t.support_y)) ** 2).mean()
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {n: fast[n] - ls[n] * g for n, g in zip(fast, grads, strict=True)}
        pred = torch.func.functional_call(model, fast, (torch.tensor(t.query_x),))
        total = total + ((pred - torch.tensor(t.query_y)) ** 2).mean()
    total = total / len(tasks)
    grads = torch.autograd.grad(total, [*ps.values(), *ls.values()])
    return float(total.detach()), grads


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_a_plain_autograd_loop(first_order):
    model = net(hidden=(8,))
    maml = MAML(model, inner_steps=2, inner_lr=0.05)
    tasks = list(sine_tasks(3, k=5, q=7))  # same sizes: no padding involved
    value, g_params, g_lrs = meta_gradient(model, maml.params(), maml.lrs(), stack_tasks(tasks), steps=2,
                                           first_order=first_order)
    ref_value, ref_grads = reference_meta_gradient(model, maml.params(), maml.lrs(), tasks, 2, first_order)
    assert float(value) == pytest.approx(ref_value, rel=1e-5)
    for ours, ref in zip([*g_params.values(), *g_lrs.values()], ref_grads, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


def test_first_and_second_order_differ_when_the_inner_loop_is_curved():
    model = net(hidden=(8,))
    maml = MAML(model, inner_steps=1, inner_lr=0.3)
    batch = stack_tasks(list(sine_tasks(4)))
    _, second, _ = meta_gradient(model, maml.params(), maml.lrs(), batch, first_order=False)
    _, first, _ = meta_gradient(model, maml.params(), maml.lrs(), batch, first_order=True)
    assert any(not torch.allclose(second[n], first[n]) for n in second)


def test_padding_does_not_change_a_task_loss():
    model = net(hidden=(8,))
    maml = MAML(model, inner_steps=1, inner_lr=0.1)
    small, big = list(sine_tasks(1, k=3, q=4, seed=1)) + list(sine_tasks(1, k=9, q=12, seed=2))
    alone = maml.task_loss([small])
    together = maml.task_loss([small, big])
    assert together == pytest.approx((alone + maml.task_loss([big])) / 2, rel=1e-5)


def test_empty_support_means_no_adaptation():
    maml = MAML(net(), inner_steps=3, inner_lr=0.1)
    t = next(sine_tasks(1))
    x = np.linspace(-4, 4, 9, dtype=np.float32)[:, None]
    no_data = maml.adapt(np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32))
    assert np.array_equal(no_data.predict(x), maml.predict(x))
    zero_shot = Task(np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32), t.query_x, t.query_y)
    assert maml.task_loss([zero_shot]) == pytest.approx(maml.task_loss([t], steps=0), rel=1e-6)


def test_meta_training_learns_to_adapt_and_is_deterministic():
    val = list(sine_tasks(40, seed=99))
    fits = []
    for _ in range(2):
        maml = MAML(net(), inner_steps=2, inner_lr=0.05, meta_batch_size=16, max_steps=250, meta_lr=3e-3)
        before = maml.task_loss(val)
        maml.meta_fit(sine_tasks(10**6, seed=1), show_progress=False)
        fits.append(maml)
    after, unadapted = maml.task_loss(val), maml.task_loss(val, steps=0)
    assert after < 0.5 * before, (before, after)
    assert after < 0.6 * unadapted, (unadapted, after)  # adaptation is what helps, not only the init
    a, b = (dict(m.state_dict()) for m in fits)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert maml.history_["steps"] == 250 and maml.history_["tasks"] == 250 * 16


def test_meta_sgd_learns_the_inner_rates_and_plain_maml_keeps_them():
    tasks = list(sine_tasks(64, seed=3))
    learned = MAML(net(), meta_sgd=True, inner_lr=0.05, meta_batch_size=8, max_steps=8).meta_fit(
        tasks, show_progress=False)
    fixed = MAML(net(), meta_sgd=False, inner_lr=0.05, meta_batch_size=8, max_steps=8).meta_fit(
        tasks, show_progress=False)
    assert any(not torch.allclose(v, torch.full_like(v, 0.05)) for v in learned.lrs().values())
    assert all(torch.equal(v, torch.full_like(v, 0.05)) for v in fixed.lrs().values())


def test_head_only_adaptation_leaves_the_body_alone():
    maml = MAML(net(), adapt=["output"], inner_steps=3, inner_lr=0.1)
    assert set(maml.lrs()) == {"output.weight", "output.bias"}
    adapted = maml.adapt(next(sine_tasks(1)))
    for name, value in maml.params().items():
        assert torch.equal(adapted.params[name], value) != name.startswith("output")
    with pytest.raises(ValueError, match="no parameter"):
        MAML(net(), adapt=["nothing"])


def test_classification_tasks_with_shuffled_labels():
    """2-way tasks whose label meaning changes per task: only adaptation can solve them."""
    rng = np.random.default_rng(0)

    def tasks(n):
        for _ in range(n):
            centres = rng.normal(0, 3, (2, 2))
            x = np.concatenate([c + rng.normal(0, 0.5, (10, 2)) for c in centres]).astype(np.float32)
            y = np.repeat([0, 1], 10)
            order = rng.permutation(20)
            x, y = x[order], y[order]
            yield Task(x[:8], y[:8], x[8:], y[8:])

    torch.manual_seed(0)
    maml = MAML(FullyConnectedNet(2, 2, (32,), act="RELU"), loss="cross_entropy", inner_steps=3, inner_lr=0.1,
                meta_batch_size=16, max_steps=150, meta_lr=3e-3)
    maml.meta_fit(tasks(10**6), show_progress=False)
    test = list(tasks(50))
    accuracy = np.mean([np.mean(maml.adapt(t).predict(t.query_x) == t.query_y) for t in test])
    zero_shot = np.mean([np.mean(maml.predict(t.query_x) == t.query_y) for t in test])
    assert accuracy > 0.85 and accuracy > zero_shot + 0.2, (accuracy, zero_shot)
    proba = maml.adapt(test[0]).predict_proba(test[0].query_x)
    assert proba.shape == (12, 2) and np.allclose(proba.sum(1), 1)


def test_save_and_load_round_trip(tmp_path):
    maml = MAML(net(), inner_steps=2, max_steps=5, meta_batch_size=4).meta_fit(sine_tasks(20), show_progress=False)
    path = maml.save(tmp_path / "m", extra={"note": "test"})
    config = json.loads((path / "config.json").read_text())
    assert config["note"] == "test" and config["params"]["inner_steps"] == 2
    loaded = load_maml(path, net(seed=1))
    t = next(sine_tasks(1, seed=5))
    assert np.allclose(loaded.adapt(t).predict(t.query_x), maml.adapt(t).predict(t.query_x), atol=1e-6)
    (path / "config.json").write_text(json.dumps({**config, "learner": "Other"}))
    with pytest.raises(ValueError, match="not a MAML model"):
        load_maml(path, net())


def test_validation_tasks_keep_the_best_weights():
    val = list(sine_tasks(20, seed=7))
    maml = MAML(net(), inner_steps=1, inner_lr=0.05, meta_batch_size=8, max_steps=60, meta_lr=3e-2)
    maml.meta_fit(sine_tasks(10**6, seed=8), val_tasks=val, val_every=10, show_progress=False)
    recorded = dict(maml.history_["val_loss"])
    assert sorted(recorded) == [10, 20, 30, 40, 50, 60]
    best_step = min(recorded, key=recorded.get)
    assert maml.history_["best_step"] == best_step
    assert maml.task_loss(val) == pytest.approx(recorded[best_step], rel=1e-5)
