"""The main job on the embedded sample data: meta-train, meta-test on unseen data, save.

It meta-trains a Prototypical network on the meta-training classes for a bounded time,
then measures few-shot accuracy (mean over episodes with a 95% confidence interval) on
the meta-validation split and on every meta-test benchmark of :mod:`medmeta.protocol`,
and saves the model (safetensors, weights only) and a ``results.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import medmeta
from medmeta.learners import PrototypicalNetwork
from medmeta.protocol import META_TEST_SETS, meta_test_pool, meta_train_pool
from medmeta.tasks import EpisodeSampler


@dataclass
class DemoConfig:
    output: Path = Path("runs/demo")
    data_dir: Path | None = None
    budget_seconds: float = 60.0
    eval_episodes: int = 200
    shots: int = 5
    queries: int = 15
    seed: int = 0


def run_demo(cfg: DemoConfig, *, show_progress: bool = True) -> dict:
    """Run the demo and return what it wrote to ``results.json``."""
    torch.manual_seed(cfg.seed)
    x, keys = meta_train_pool("train", data_dir=cfg.data_dir)
    train = EpisodeSampler(keys, n_way=5, k_shot=cfg.shots, n_query=cfg.queries, seed=cfg.seed)
    learner = PrototypicalNetwork(in_channels=3, max_seconds=cfg.budget_seconds, max_episodes=10**9, seed=cfg.seed)
    learner.meta_fit(train.tasks(x), show_progress=show_progress)

    evaluations = []
    vx, vkeys = meta_train_pool("val", data_dir=cfg.data_dir)
    benchmarks = [("meta-val (seen classes, unseen images)", vx, vkeys, 5)]
    for bench in META_TEST_SETS:
        tx, tkeys = meta_test_pool(bench, data_dir=cfg.data_dir)
        benchmarks.append((f"meta-test {bench.name}", tx, tkeys, bench.n_way))
    for name, bx, bkeys, n_way in benchmarks:
        sampler = EpisodeSampler(bkeys, n_way, cfg.shots, cfg.queries, seed=cfg.seed + 1)
        acc = learner.score(sampler.tasks(bx, cfg.eval_episodes))
        evaluations.append({"benchmark": name, "ways": n_way, "shots": cfg.shots, "episodes": acc.n,
                            "accuracy": acc.mean, "ci95": acc.ci})

    model_dir = learner.save(Path(cfg.output) / "model")
    results = {
        "medmeta_version": medmeta.__version__,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "training": {k: v for k, v in learner.history_.items() if not isinstance(v, list)},
        "evaluations": evaluations,
        "model": str(model_dir),
        "disclaimer": medmeta.DISCLAIMER,
    }
    (Path(cfg.output) / "results.json").write_text(json.dumps(results, indent=2))
    return results
