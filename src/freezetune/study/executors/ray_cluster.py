"""The Ray executor: every run of the grid is a Ray task, wherever the cluster has room for it.

Ray core, not Ray Tune: the grid, its resumption and its report are the study's own, and a run
needs nothing from Ray but a place to execute and a retry when that place dies. Each pending run
becomes one task with ``--run-resources`` (``cpu=1`` by default; Ray sets ``OMP_NUM_THREADS``
to the CPUs, and ``CUDA_VISIBLE_DEVICES`` to the GPUs, it grants). On its node the task checks
that it sees the study folder, notes where it executes, and trains the run in a process of its
own, exactly as the local executor does (``worker.run_in_child``); it returns the run's outcome
as data, and the study process, the only writer of ``results.sqlite``, records it.

Faults:

- A node or worker process that dies mid-run: Ray retries the task (at most ``max_retries``
  times) and the retry continues from the run's newest checkpoint in the (shared) run folder.
  Runs checkpoint every :data:`STUDY_SAVE_EVERY` optimizer steps and at each epoch end unless
  the study sets ``train.save_every`` (which is not part of a run's identity, so run_ids are
  the local executor's; the checkpoints go once the run succeeded). Past the retries the run is
  recorded as failed with the reason; ``--retry-failed`` continues it.
- The study process killed: run the same command again. Finished runs are skipped; runs it left
  ``running`` are submitted again and continue from their checkpoints (a run that finished
  after its driver died is read back from its ``result.json``, not trained again). Rows are
  keyed by run_id, so nothing is counted twice. The dead driver's tasks are orphans: Ray
  cancels a job's tasks when its driver's connection drops (a local cluster the driver started
  dies with it), and until one really stops the new attempt of that run waits on the run's lock
  (``worker._only_writer``) rather than writing beside it.
- Ctrl-C: the cluster's tasks are cancelled (``ray.cancel(force=True)``); the rows of runs in
  flight stay ``running`` and continue next time, as after a kill.

``--out-root`` must be a shared file system mounted at the same path on every node: the study
process writes a marker file into the study folder and a task that cannot read it fails the
study at once, before training. Relative paths in the run config mean what they mean to the
study process (a task changes to its working directory when the node has it), and its
``FREEZETUNE_*``, ``HF_HUB_OFFLINE`` and ``TOKENIZERS_PARALLELISM`` settings go to the runs.

>>> parse_resources("cpu=2,gpu=0.5")
{'cpu': 2.0, 'gpu': 0.5}
>>> ray_options(parse_resources("gpu=1,memory=4e9,special=1"))
{'num_cpus': 1.0, 'num_gpus': 1.0, 'memory': 4000000000, 'resources': {'special': 1.0}}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freezetune.errors import UserError
from freezetune.plugins import code_modules
from freezetune.records import atomic_write_text
from freezetune.study.executors.ledger import Ledger, next_ready, run_config
from freezetune.study.spec import PlannedRun
from freezetune.study.worker import RunOutcome, error_line, run_in_child, unfinished_step

__all__ = [
    "DEFAULT_RESOURCES",
    "STUDY_SAVE_EVERY",
    "RayExecutor",
    "parse_resources",
    "ray_options",
    "require_ray",
    "run_on_node",
]

DEFAULT_RESOURCES: dict[str, float] = {"cpu": 1.0}
#: Ray retries of a run whose worker or node died
MAX_RETRIES = 2
#: checkpoint period of runs that do not set train.save_every (plus each epoch end)
STUDY_SAVE_EVERY = 500
#: seconds between looks at the cluster (where runs execute) while none ends
POLL_S = 1.0
#: seconds a --ray-address has to accept a connection, then to answer as a Ray head's GCS
PROBE_S = 10
MARKER = ".shared-folder-check"
NOTES = ".where"
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
_RESOURCES_HELP = (
    "use NAME=AMOUNT pairs such as cpu=2,gpu=1 (NAME: cpu, gpu, memory in bytes or a custom "
    "Ray resource; AMOUNT: a number >= 0)"
)


class NotShared(UserError):
    """A task's node cannot see the study folder."""


def require_ray() -> Any:
    """The ``ray`` module, or the one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'freezetune[ray]'") from None
    return ray


def parse_resources(text: str | None) -> dict[str, float]:
    """``--run-resources``: what one run asks of the cluster (``cpu=1`` unless it says)."""
    found: dict[str, float] = {}
    for part in (text or "").split(",") if text and text.strip() else []:
        name, sep, amount = (s.strip() for s in part.partition("="))
        try:
            value = float(amount)
        except ValueError:
            value = math.nan
        if not (sep and _NAME.match(name) and 0 <= value < math.inf):
            raise UserError(f"bad --run-resources {text!r} ({part.strip()!r}): {_RESOURCES_HELP}")
        key = name.lower() if name.lower() in ("cpu", "gpu", "memory") else name
        if key in found:
            raise UserError(f"bad --run-resources {text!r}: {key} is given twice")
        found[key] = value
    return {**DEFAULT_RESOURCES, **found}


def ray_options(resources: dict[str, float]) -> dict[str, Any]:
    """:func:`parse_resources`'s names as ``ray.remote`` options."""
    options: dict[str, Any] = {"num_cpus": resources.get("cpu", 1.0)}
    if resources.get("gpu"):
        options["num_gpus"] = resources["gpu"]
    if resources.get("memory"):
        options["memory"] = int(resources["memory"])
    custom = {k: v for k, v in resources.items() if k not in ("cpu", "gpu", "memory")}
    return {**options, "resources": custom} if custom else options


@dataclass(frozen=True)
class SharedFolder:
    """What a task needs to prove it sees the study folder and to say where it executes."""

    marker: str  # the file the study process wrote, holding ``token``
    token: str
    notes: str  # folder of "<run_id>.json": the node each run executes on
    cwd: str  # the study process's working directory
    plugins: tuple[str, ...] = ()  # modules that registered plugins by code (plugins.py)


def _share(folder: Path) -> SharedFolder:
    notes = folder / NOTES
    notes.mkdir(exist_ok=True)
    token = uuid.uuid4().hex
    atomic_write_text(folder / MARKER, token + "\n")
    plugins = tuple(code_modules())
    return SharedFolder(str(folder / MARKER), token, str(notes), os.getcwd(), plugins)


def _check_shared(shared: SharedFolder, ip: str) -> None:
    try:
        seen: str | None = Path(shared.marker).read_text(encoding="utf-8").strip()
    except OSError:
        seen = None
    if seen != shared.token:
        why = "missing" if seen is None else "another study process's"
        raise NotShared(
            f"Ray node {ip} does not see the study folder {Path(shared.marker).parent} (its "
            f"{MARKER} file is {why} there): --out-root must be a shared file system, mounted "
            "at the same path on every node"
        )


def run_on_node(config: dict[str, Any], shared: SharedFolder) -> RunOutcome:
    """The Ray task: check the shared folder, note where it runs, train in a child process."""
    import ray

    ip = ray.util.get_node_ip_address()
    _check_shared(shared, ip)
    out = Path(config["out"])
    resumed = unfinished_step(out)
    node = ray.get_runtime_context().get_node_id()
    note = {"ip": ip, "node_id": node, "pid": os.getpid(), "resumed_from": resumed}
    atomic_write_text(Path(shared.notes) / f"{out.name}.json", json.dumps(note))
    with contextlib.suppress(OSError):  # relative paths mean what they meant to the study
        os.chdir(shared.cwd)
    outcome = run_in_child(config, shared.plugins)
    return dataclasses.replace(outcome, where=ip, resumed_from=resumed)


def _probe(address: str) -> None:
    """Fail at once, not after Ray's minutes of retries, when nothing listens at ``address``."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not (sep and host and port.isdigit()):
        raise UserError(
            f"bad --ray-address {address!r}: use auto or HOST:PORT (e.g. 10.0.0.1:6379)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_S).close()
    except OSError as err:
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({err.strerror or err}); start it with "
            f"`ray start --head --port={port}` there, or fix --ray-address"
        ) from None
    if not address.startswith("ray://"):  # a Ray Client server is not a GCS: ray.init asks it
        _ask_gcs(address)


def _gcs_channel(address: str) -> Any:
    """A gRPC channel to ``address`` as Ray opens one to its GCS (TLS when RAY_USE_TLS)."""
    try:
        from ray._private.gcs_utils import create_gcs_channel
    except ImportError:  # a Ray without it: plain gRPC
        import grpc

        return grpc.insecure_channel(address)
    return create_gcs_channel(address)


def _ask_gcs(address: str) -> None:
    """Something answers at ``address``; fail at once unless it is a Ray head's GCS (else
    ``ray.init`` retries forever against, say, the dashboard's port)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = _gcs_channel(address)
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
        stub.GetClusterId(request, timeout=PROBE_S)
    except grpc.RpcError as err:
        code = err.code() if callable(getattr(err, "code", None)) else None
        if code == grpc.StatusCode.UNAUTHENTICATED:  # a head that wants its token: ray.init has it
            return
        why = code.name if code is not None else type(err).__name__
        raise UserError(
            f"{address} answers but is not a Ray head (no GCS reply: {why}); pass the head's "
            "GCS address (`ray start --head` prints it; port 6379 by default), not the "
            "dashboard's (8265)"
        ) from None
    finally:
        channel.close()


def _forwarded_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if k.startswith("FREEZETUNE_") or k in FORWARDED_ENV
    }


def _first_line(err: BaseException) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return text[:200]


@dataclass(frozen=True)
class RayExecutor:
    """Runs as Ray tasks on the cluster at ``address`` (None: ``RAY_ADDRESS``, else a local
    cluster this process starts and stops; or the one this process already joined)."""

    address: str | None = None
    resources: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    max_retries: int = MAX_RETRIES
    save_every: int = STUDY_SAVE_EVERY
    name: str = "ray"

    def __post_init__(self) -> None:
        require_ray()  # say it before the study starts
        if self.address not in (None, "auto", "local"):
            _probe(self.address)

    def run(self, todo: list[PlannedRun], ledger: Ledger) -> None:
        if not todo:
            return
        ray = require_ray()
        joined = self._connect(ray)
        try:
            self._drive(ray, todo, ledger)
        finally:
            if joined:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join the cluster unless this process already has; True if it joined now."""
        if ray.is_initialized():
            return False
        env = _forwarded_env()
        try:
            ray.init(
                address=self.address,
                include_dashboard=False,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": env} if env else None,
            )
        except (ConnectionError, ValueError, RuntimeError) as err:
            where = f"the Ray cluster at {self.address}" if self.address else "a Ray cluster"
            raise UserError(
                f"cannot reach {where} ({_first_line(err)}); start it with `ray start --head` "
                "or fix --ray-address"
            ) from None
        return True

    def _drive(self, ray: Any, todo: list[PlannedRun], ledger: Ledger) -> None:
        """Submit each run once its teacher is done; record each as it ends."""
        shared = _share(ledger.folder)
        _warn_if_no_node_fits(ray, self.resources)
        task = ray.remote(run_on_node)
        options = {"max_retries": self.max_retries, "retry_exceptions": False}
        options.update(ray_options(self.resources))
        queue, flight = list(todo), dict[Any, PlannedRun]()
        try:
            while queue or flight:
                while (run := next_ready(queue, list(flight.values()))) is not None:
                    ledger.start(run, placed=False)
                    Path(shared.notes, f"{run.run_id}.json").unlink(missing_ok=True)
                    config = run_config(run, ledger.out(run), False, save_every=self.save_every)
                    name = f"freezetune {run.strategy} seed {run.seed}"
                    flight[task.options(name=name, **options).remote(config, shared)] = run
                ready, _ = ray.wait(list(flight), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    ledger.end(flight.pop(ref), self._outcome(ray, ref))
                for run in flight.values():
                    _show_place(run, shared, ledger)
        finally:
            _cancel_unfinished(ray, list(flight))

    def _outcome(self, ray: Any, ref: Any) -> RunOutcome:
        try:
            outcome: RunOutcome = ray.get(ref)
            return outcome
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, UserError):  # e.g. NotShared: the study cannot go on
                raise UserError(str(err.cause)) from None
            return RunOutcome.failed(f"the run's Ray task raised {error_line(err.cause)}")
        except ray.exceptions.RayError as err:
            return RunOutcome.failed(
                f"Ray lost the run's worker {1 + self.max_retries} times ({type(err).__name__}: "
                f"{_first_line(err)}); --retry-failed on Ray continues it from its last checkpoint"
            )


def _warn_if_no_node_fits(ray: Any, resources: dict[str, float]) -> None:
    """Say so when no live node has what one run asks (runs then wait for one to join)."""
    names = {"cpu": "CPU", "gpu": "GPU"}
    wanted = {names.get(k, k): v for k, v in resources.items() if v > 0}
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    if not any(all(have.get(k, 0) >= v for k, v in wanted.items()) for have in nodes):
        asked = ",".join(f"{k}={v:g}" for k, v in resources.items())
        print(
            f"note: no node of the Ray cluster has {asked} (--run-resources); the runs wait "
            "until one that has joins",
            file=sys.stderr,
        )


def _show_place(run: PlannedRun, shared: SharedFolder, ledger: Ledger) -> None:
    try:
        note = json.loads(Path(shared.notes, f"{run.run_id}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not started yet (or mid-write)
    step = note.get("resumed_from")
    ledger.placed(run, str(note.get("ip")) + (f" from step {step}" if step else ""))


def _cancel_unfinished(ray: Any, refs: list[Any]) -> None:
    """Interrupted or stopped: the cluster stops the runs still going. A task that has already
    ended is left alone: Ray 2.60 aborts the driver when a cancel meets the reply of a task
    that is just ending (``... task that was not pending``, the race of ray-project/ray
    #54846), so this narrows that window to the moment between the check and the cancel."""
    if not refs:
        return
    _, going = ray.wait(refs, num_returns=len(refs), timeout=0)
    for ref in going:
        ray.cancel(ref, force=True)
