"""The Flower apps of federated meta-learning (Flower's Message API): the only Flower-specific code.

- :func:`client_app` answers three kinds of message: ``query.statistics`` and ``query.calibration`` (sums
  over the client's data) and ``train`` (local MAML meta-updates from the global parameters);
- :func:`server_app` runs the stages of :mod:`medmeta.federated.task`: statistics, ``rounds`` rounds of
  :class:`PerFedAvg`, calibration, then saves the model;
- ``server`` and ``client`` are the apps a deployment runs (``flower_app/pyproject.toml`` names them): the
  server takes its settings from the run config, each client reads the file named by its node config
  (``data-path``; else the run config's ``data``), all of it or partition ``partition-id``.

Clients that fail or do not answer within ``round-timeout`` are left out of that stage or round; the run goes
on as long as one client answers. Arrays travel as NumPy ``.npy`` bytes (never pickles).
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flwr
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from medmeta.errors import DataError
from medmeta.federated.glucose import FederatedGlucose
from medmeta.federated.settings import FederatedSettings
from medmeta.federated.task import FederatedTask, Sums, set_threads
from medmeta.federated.warfarin import FederatedWarfarin
from medmeta.progress import progress

log = logging.getLogger("medmeta")
TASKS: dict[str, type[FederatedTask]] = {"cgm": FederatedGlucose, "warfarin": FederatedWarfarin}
#: ``on_round(round, model)``: called with the global model before training (round 0) and after each round.
OnRound = Callable[[int, Any], None]


def payload_bytes(content: RecordDict) -> int:
    """Bytes of a message's content as Flower serialises it for transport (without HTTP framing)."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


def _sums_content(sums: Sums) -> RecordDict:
    arrays = ArrayRecord({k: Array(v) for k, v in sums.arrays.items()}) if sums.arrays else ArrayRecord()
    return RecordDict({"sums": arrays, "counts": ConfigRecord({"json": sums.counts_json()})})


def _sums(content: RecordDict) -> Sums:
    arrays = {k: v.numpy() for k, v in content["sums"].items()}
    return Sums.from_message(arrays, str(content["counts"]["json"]))


# -- the client ------------------------------------------------------------------------------------
def _client_side(message: Message, context: Context) -> tuple[FederatedTask, Any, dict[str, Any]]:
    """This client's task, data and the federation's setup (empty before the statistics stage)."""
    set_threads()
    config = message.content["config"]
    settings = FederatedSettings.from_run_config(json.loads(str(config["settings"])))
    task = TASKS[settings.task](settings)
    node = context.node_config
    path, partition = str(node.get("data-path") or settings.data), node.get("partition-id")
    if not path:
        raise DataError("this client has no data file: set data-path in its node config")
    data = task.load(path, None if partition is None else int(partition))
    setup = json.loads(str(config["setup"])) if "setup" in config else {}
    return task, data, setup


class ClientFailure(RuntimeError):
    """What a client's failure tells the server and the logs: never a record, a line or a value."""


def without_patient_data(handler: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    """Wrap a client handler so that an error reaches the server (and Flower's logs) as the exception's type and,
    for medmeta's data errors, the reason and field only: the record id and line stay on the client."""

    @functools.wraps(handler)
    def wrapper(message: Message, context: Context) -> Message:
        try:
            return handler(message, context)
        except DataError as exc:
            r = exc.rejection
            raise ClientFailure(f"DataError: {r.reason}" + (f" (field {r.field!r})" if r.field else "")) from None
        except Exception as exc:
            raise ClientFailure(type(exc).__name__) from None

    return wrapper


def client_app(mods: Sequence[Callable] = ()) -> ClientApp:
    """The ClientApp; ``mods`` are Flower client mods (for example Flower's client-side DP clipping)."""
    app = ClientApp(mods=list(mods))

    @app.query("statistics")
    @without_patient_data
    def statistics(message: Message, context: Context) -> Message:
        task, data, _ = _client_side(message, context)
        return Message(_sums_content(task.statistics(data)), reply_to=message)

    @app.train()
    @without_patient_data
    def train(message: Message, context: Context) -> Message:
        task, data, setup = _client_side(message, context)
        state = message.content["arrays"].to_torch_state_dict()
        round_ = int(message.content["config"]["server-round"])
        new, weight, loss = task.train(data, setup, state, round_)
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"weight": weight,
                                                                                          "loss": loss})}),
                       reply_to=message)

    @app.query("calibration")
    @without_patient_data
    def calibration(message: Message, context: Context) -> Message:
        task, data, setup = _client_side(message, context)
        state = message.content["arrays"].to_torch_state_dict()
        return Message(_sums_content(task.calibration(data, setup, state)), reply_to=message)

    return app


# -- the server ------------------------------------------------------------------------------------
def _failure(reply: Message) -> str:
    """The last line of a client's error (see :func:`without_patient_data`)."""
    reason = (reply.error.reason or "").strip().splitlines()
    return reason[-1] if reason else f"error code {reply.error.code}"


class PerFedAvg(FedAvg):
    """FedAvg over the clients' locally meta-trained parameters (Per-FedAvg), weighted by the clients' ``weight``
    (or equally with ``uniform``, as differential privacy's noise calibration assumes).

    Every connected client is asked each round; whoever fails or times out is left out of the average.
    Records, per round, who answered, the payload bytes each way and the size (L2 norm) of the updates.
    """

    def __init__(self, uniform: bool = False) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1,
                         weighted_by_key="weight")
        self.uniform = uniform
        self.rounds: dict[int, dict[str, Any]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._sent = [a.numpy() for a in arrays.values()]
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.rounds[server_round] = {"round": server_round, "asked": len(messages), "started": time.monotonic(),
                                     "bytes_to_client": payload_bytes(messages[0].content) if messages else 0}
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None,
                                                                                     MetricRecord | None]:
        replies = list(replies)
        ok = [r for r in replies if not r.has_error()]
        sizes = [payload_bytes(r.content) for r in ok]
        record = self.rounds[server_round]
        record.update(replied=len(ok), failed=len(replies) - len(ok),
                      missing=record["asked"] - len(replies), failures=sorted({_failure(r) for r in replies
                                                                               if r.has_error()}),
                      bytes_from_client=round(sum(sizes) / len(sizes)) if sizes else 0,
                      bytes_from_client_max=max(sizes, default=0))
        norms = [float(np.sqrt(sum(np.sum((a.numpy() - b) ** 2) for a, b in
                                    zip(r.content["arrays"].values(), self._sent, strict=True)))) for r in ok]
        record["update_norm_median"] = float(np.median(norms)) if norms else None
        if self.uniform:
            for r in ok:
                r.content["metrics"]["weight"] = 1.0
        arrays, metrics = super().aggregate_train(server_round, ok)
        record["loss"] = float(metrics["loss"]) if metrics else None
        record["seconds"] = round(time.monotonic() - record.pop("started"), 2)
        return arrays, metrics


def _wait_for_clients(grid: Grid, count: int) -> list[int]:
    while len(nodes := list(grid.get_node_ids())) < count:
        log.info("waiting for clients: %d of %d connected", len(nodes), count)
        time.sleep(1)
    return nodes


def _query(grid: Grid, action: str, content: RecordDict, settings: FederatedSettings) -> tuple[Sums, dict]:
    """Ask every connected client for ``action`` sums and add up the answers."""
    nodes = list(grid.get_node_ids())
    messages = [Message(content, dst_node_id=n, message_type=f"query.{action}") for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
    ok = [r for r in replies if not r.has_error()]
    record = {"asked": len(nodes), "replied": len(ok), "failed": len(replies) - len(ok),
              "missing": len(nodes) - len(replies),
              "failures": sorted({_failure(r) for r in replies if r.has_error()}),
              "bytes_to_client": payload_bytes(content),
              "bytes_from_client_max": max((payload_bytes(r.content) for r in ok), default=0)}
    if not ok:
        raise DataError(f"no client answered the {action} query ({record})")
    return functools.reduce(operator.add, (_sums(r.content) for r in ok)), record


def run_server(grid: Grid, settings: FederatedSettings, on_round: OnRound | None = None) -> dict[str, Any]:
    """The server's side of a run (see :mod:`medmeta.federated.task`); returns the run's report."""
    set_threads()
    start = time.monotonic()
    task = TASKS[settings.task](settings)
    _wait_for_clients(grid, settings.min_clients)
    config = ConfigRecord({"settings": json.dumps(settings.to_run_config())})
    sums, statistics = _query(grid, "statistics", RecordDict({"config": config}), settings)
    setup, state = task.setup(sums)
    config["setup"] = json.dumps(setup)

    clients = statistics["replied"]
    strategy = PerFedAvg(uniform=settings.dp_clip > 0)
    wrapped = strategy if not settings.dp_clip else DifferentialPrivacyServerSideFixedClipping(
        strategy, settings.dp_noise, settings.dp_clip, num_sampled_clients=clients)
    with progress(f"Federated meta-training ({settings.task}, {clients} clients)", settings.rounds) as advance:

        def after_round(round_: int, arrays: ArrayRecord) -> None:
            if round_:
                r = strategy.rounds[round_]
                loss = "–" if r["loss"] is None else f"{r['loss']:.4f}"
                advance(round_, f"round {round_}: {r['replied']}/{r['asked']} clients, loss {loss}")
            if on_round:
                on_round(round_, task.model(setup, arrays.to_torch_state_dict()))

        result = wrapped.start(grid, ArrayRecord(state), num_rounds=settings.rounds, timeout=settings.round_timeout,
                               train_config=config, evaluate_fn=after_round)
    state = result.arrays.to_torch_state_dict()
    content = RecordDict({"config": config, "arrays": ArrayRecord(state)})
    calibration, calibration_record = (_query(grid, "calibration", content, settings)
                                       if settings.task == "warfarin" else (Sums(), None))
    report = {"algorithm": "Per-FedAvg: FedAvg of each client's local MAML meta-updates",
              "framework": f"flwr {flwr.__version__}",
              "settings": {k: v for k, v in settings.to_run_config().items() if k not in ("data", "output")},
              "statistics": statistics, "rounds": [strategy.rounds[r] for r in sorted(strategy.rounds)],
              "calibration": calibration_record, "seconds": round(time.monotonic() - start, 1)}
    report["model"] = str(task.save(setup, state, calibration, report, settings.output))
    return report


def server_app(settings: FederatedSettings | None = None, on_round: OnRound | None = None,
               report: dict[str, Any] | None = None) -> ServerApp:
    """The ServerApp: with ``settings`` (a simulation), or taking them from the run config (a deployment).

    ``report``, if given, receives the run's report.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        chosen = settings or FederatedSettings.from_run_config(dict(context.run_config))
        out = run_server(grid, chosen, on_round)
        if report is not None:
            report.update(out)

    return app


server = server_app()
client = client_app()
