"""Speed: meta-training episodes per second, and one-query prediction against support sets of 10 to 100,000 cases.

    bash benchmarks/setup_peers.sh      # once
    .venv/bin/python benchmarks/speed.py --data-dir ../shared/data

Training: 5-way 5-shot 15-query episodes of 28x28 RGB meta-training images, the median time of
an optimisation step over ``--train-episodes`` episodes after warm-up. Prediction: medmeta's
``SupportMemory`` with each shipped bundle (cases stored on disk, embeddings cached, a
scikit-learn ``NearestNeighbors`` index above 4,096 cases) beside the peers' own way of
holding a support set (easyfsl's ``process_support_set``, learn2learn MAML's adaptation).
"update" is the time to take in the support set (medmeta: add 5 new cases of a new class to a
memory that already holds the others, then the first prediction, which rebuilds the state);
"latency" the median time to answer one query after that. The large support sets repeat the
training images (tiled); while a memory is filled each distinct image is embedded once (the
timed update and queries are not affected). The peers are timed at ``--peer-sizes`` only. Writes
``benchmarks/results/speed.{json,md}``. A benchmark, not a test: timings vary with the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import medmeta
from medmeta.bundle import load_bundle
from medmeta.datasets.medmnist import load_medmnist
from medmeta.learners import MAMLClassifier, MatchingNetwork, PrototypicalNetwork
from medmeta.memory import SupportMemory
from medmeta.paths import medmnist_file
from medmeta.protocol import meta_train_pool
from medmeta.tasks import EpisodeSampler

HERE = Path(__file__).resolve().parent
BUNDLES = HERE.parent / "monai_bundles"


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_speed(x, keys, episodes: int) -> list[dict]:
    from peers import L2LMAML, EasyFSLMethod, L2LProto

    resnet = {"backbone": "resnet", "hidden": 256}
    learners = {
        "medmeta Prototypical, ResNet-10 (bundle architecture)": PrototypicalNetwork(distance="cosine", **resnet),
        "medmeta Matching+FCE, ResNet-10 (bundle architecture)": MatchingNetwork(**resnet),
        "medmeta Prototypical, Conv-4": PrototypicalNetwork(distance="cosine"),
        "medmeta Matching+FCE, Conv-4": MatchingNetwork(),
        "medmeta first-order MAML, Conv-4 (instance norm), 5 inner steps": MAMLClassifier(),
    }
    rows = []
    for name, learner in learners.items():
        optimiser = torch.optim.Adam(learner.parameters(), lr=1e-3)
        tasks = EpisodeSampler(keys, 5, 5, 15, seed=0).tasks(x)
        learner.train()

        def step(learner=learner, optimiser=optimiser, tasks=tasks):
            loss, _ = learner.episode_loss(next(tasks))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        rows.append({"method": name, "episodes_per_second": 1 / median_seconds(step, episodes)})
    for peer in (EasyFSLMethod("PrototypicalNetworks"), EasyFSLMethod("MatchingNetworks"), L2LProto(),
                 L2LMAML(), L2LMAML(first_order=True)):
        optimiser = torch.optim.Adam(peer.module.parameters(), lr=1e-3)
        tasks = EpisodeSampler(keys, 5, 5, 15, seed=0).tasks(x)
        peer.module.train()

        def step(peer=peer, optimiser=optimiser, tasks=tasks):
            loss = peer.episode_loss(next(tasks))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        rows.append({"method": f"{peer.name} (Conv-4)", "episodes_per_second": 1 / median_seconds(step, episodes)})
    return rows


def support_sets(sizes: list[int], data_dir) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """uint8 images and class numbers: blood cell classes, tiled when more cases are asked than exist."""
    blood = load_medmnist(medmnist_file("bloodmnist", data_dir), "train")
    out = {}
    for n in sizes:
        idx = np.resize(np.random.default_rng(0).permutation(len(blood)), n)
        out[n] = (blood.images[idx], blood.labels[idx])
    return out


@contextmanager
def embed_distinct_once(learner):
    """While filling a large memory, embed each distinct image once (the large sets repeat images).

    Only the filling uses it; the timed update and queries run the learner's own ``embed_images``.
    """
    original, cache = learner.embed_images, {}

    def embed_images(x, batch_size: int = 256):
        keys = [hashlib.sha1(t.numpy().tobytes()).digest() for t in x]
        new = [k for k in dict.fromkeys(keys) if k not in cache]
        if new:
            first: dict[bytes, int] = {}
            for i, k in enumerate(keys):
                first.setdefault(k, i)
            z = original(x[torch.as_tensor([first[k] for k in new])], batch_size)
            cache.update(zip(new, z, strict=True))
        return torch.stack([cache[k] for k in keys])

    learner.embed_images = embed_images
    try:
        yield
    finally:
        del learner.embed_images


def prediction_speed(sizes: list[int], data_dir, repeats: int, peer_sizes: list[int]) -> list[dict]:
    from peers import L2LMAML, EasyFSLMethod

    from medmeta.imaging import to_tensor

    sets = support_sets(sizes, data_dir)
    pneumonia = load_medmnist(medmnist_file("pneumoniamnist", data_dir), "test")
    new_class, query = pneumonia.images[:5], pneumonia.images[5:6]
    q = to_tensor(query, 3, 28)
    rows = []
    for bundle, name in (("fewshot_protonet_classification", "medmeta SupportMemory, Prototypical bundle"),
                         ("fewshot_matching_classification", "medmeta SupportMemory, Matching+FCE bundle")):
        learner = load_bundle(BUNDLES / bundle)
        for n, (images, labels) in sets.items():
            with tempfile.TemporaryDirectory() as tmp:
                memory = SupportMemory(tmp, learner)
                base = n - len(new_class)
                with embed_distinct_once(learner):
                    for c in np.unique(labels[:base]):
                        memory.add(images[:base][labels[:base] == c], f"blood {c}")
                memory.predict(query)  # state of the memory before the update is built
                start = time.perf_counter()
                memory.add(new_class, "pneumonia (new class)")
                memory.predict(query)
                update = time.perf_counter() - start
                latency = median_seconds(lambda memory=memory: memory.predict(query, top_k=5), repeats)
                rows.append({"method": name, "cases": n, "update_seconds": update, "latency_seconds": latency,
                             "index": memory._state.index is not None})
    for make, name in ((lambda: EasyFSLMethod("PrototypicalNetworks"), "easyfsl PrototypicalNetworks (Conv-4)"),
                       (lambda: EasyFSLMethod("MatchingNetworks"), "easyfsl MatchingNetworks (Conv-4)"),
                       (lambda: L2LMAML(ways=15), "learn2learn MAML, 3 adaptation steps (Conv-4)")):
        peer = make()
        peer.module.eval()
        for n, (images, labels) in sets.items():
            if n not in peer_sizes:
                rows.append({"method": name, "cases": n, "update_seconds": None, "latency_seconds": None,
                             "note": "not run: the peer embeds (or adapts on) every case at each support-set "
                                     "update, too long on the shared machine (see --peer-sizes)"})
                continue
            x = torch.cat([to_tensor(images[: n - 5], 3, 28), to_tensor(new_class, 3, 28)])
            y = torch.as_tensor(np.concatenate([labels[: n - 5], np.full(5, labels.max() + 1)]))
            with torch.no_grad():
                start = time.perf_counter()
                if "MAML" in name:
                    with torch.enable_grad():
                        adapted = peer._adapt(x, y, peer.test_steps)
                    update = time.perf_counter() - start
                    latency = median_seconds(lambda adapted=adapted: adapted(q), repeats)
                else:
                    peer.module.process_support_set(x, y)
                    update = time.perf_counter() - start
                    latency = median_seconds(lambda peer=peer: peer.module(q), repeats)
            rows.append({"method": name, "cases": n, "update_seconds": update, "latency_seconds": latency})
    return rows


def markdown(report: dict) -> str:
    lines = ["# Speed: meta-training and one-query prediction", "", f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}", "", "## Meta-training (5-way 5-shot 15-query, 28x28 RGB)", "",
             "| method | episodes/s |", "|---|---|"]
    lines += [f"| {r['method']} | {r['episodes_per_second']:.2f} |" for r in report["training"]]
    lines += ["", "## One query against a support set", "",
              "update: take in the support set (medmeta: add 5 cases of a new class, then the first prediction); "
              "latency: median of one more query.", "", "| method | cases | update (s) | latency (ms) |",
              "|---|---|---|---|"]
    for r in report["prediction"]:
        if r["latency_seconds"] is None:
            lines.append(f"| {r['method']} | {r['cases']:,} | – | – ({r['note']}) |")
        else:
            lines.append(f"| {r['method']} | {r['cases']:,} | {r['update_seconds']:.2f} | "
                         f"{1000 * r['latency_seconds']:.1f} |")
    lines += ["", "The machine was shared with other jobs; re-run on a quiet machine for firm numbers."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 100_000])
    parser.add_argument("--peer-sizes", type=int, nargs="+", default=[10, 1000],
                        help="Support-set sizes at which the peers are timed.")
    parser.add_argument("--train-episodes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    x, keys = meta_train_pool("train", 3, 28, args.data_dir)
    report = {
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {args.threads} torch thread(s), "
                   f"shared with other jobs; python {platform.python_version()}, torch {torch.__version__}",
        "training": training_speed(x, keys, args.train_episodes),
        "prediction": prediction_speed(args.sizes, args.data_dir, args.repeats, args.peer_sizes),
        "medmeta_version": medmeta.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
