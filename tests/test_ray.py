"""Studies on Ray (issue 14): the local executor's metrics bit for bit, a node lost mid-study, a
killed study process, the shared-folder check, and the one-line errors. Tiny random BERT, tiny
SST-2 slices; Ray clusters are children of the test, stopped by pid in teardown."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from freezetune.cli import main
from freezetune.errors import UserError
from freezetune.study import StudySpec, run_study
from freezetune.study.executors.ray_cluster import SharedFolder, _check_shared, parse_resources
from freezetune.testing import assert_one_line_error

# 3 epochs of 12 steps, a checkpoint each step (slow enough to be caught mid-run)
RUN_ARGS = [
    *("--max-train-samples", "96", "--max-eval-samples", "16", "--max-length", "24"),
    *("--epochs", "3", "--batch-size", "8", "--threads", "1", "--no-progress"),
    *("optim.lr=1e-3", "train.save_every=1"),
]
# health checks every second: a dead node is noticed in seconds, not half a minute
HEAD_CONFIG = '{"health_check_period_ms": 1000, "health_check_failure_threshold": 5}'


# test clusters: no usage stats, and no token auth (a first local ray.init would otherwise write
# ~/.ray/auth_token, which every later `ray start` on the machine then requires)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**base, **RAY_ENV, **extra}


def study_cmd(tiny_bert: str, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "freezetune", "study", "--name", "grid",
        "--strategies", "full,bottom:1", "--seeds", "0,1", "--model", tiny_bert,
        "--task", "sst2", "--out-root", str(root), "--executor", "ray", *RUN_ARGS, *extra,
    ]  # fmt: skip


def rows_of(folder: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(folder / "results.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT * FROM runs"))
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), fields[19]


def tree(root: int) -> dict[int, str]:
    """``root`` and its descendants now: pid -> start time (to tell a reused pid apart)."""
    stats = {int(p.name): _stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if (stat := stats.get(pid)) is not None:
            found[pid] = stat[1]
            todo += [child for child, s in stats.items() if s is not None and s[0] == pid]
    return found


def survivors(processes: dict[int, str]) -> list[int]:
    return [pid for pid, start in processes.items() if (s := _stat(pid)) and s[1] == start]


def stop_processes(started: list[subprocess.Popen], *, also: dict[int, str] | None = None) -> None:
    """Stop what this test started, by pid: the ``ray start --block`` children (they stop their
    node's processes as they exit), then any of their processes (or ``also``) left behind."""
    snapshot = dict(also or {})
    for proc in started:
        snapshot.update(tree(proc.pid))
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    deadline = time.monotonic() + 10
    while (left := survivors(snapshot)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def argv(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def running_on(cluster: dict[int, str]) -> dict[int, str]:
    """The processes of ``cluster`` still alive, but a Ray node's agents (they exit on their
    own once they notice their raylet is gone)."""
    left = {pid: argv(pid) for pid in survivors(cluster)}
    return {pid: line for pid, line in left.items() if not line.strip().endswith("Agent")}


def is_ray(pid: int, temp: str) -> bool:
    line = argv(pid)
    return pid != os.getpid() and (temp in line or line.startswith("ray::"))


def raylet_of(node_port: int) -> list[int]:
    """The raylet listening on ``node_port``."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_text(errors="replace").split("\0")
            if argv[0].endswith("/raylet") and f"--node_manager_port={node_port}" in argv:
                found.append(int(proc.name))
    return found


def ancestors(pid: int) -> Iterator[int]:
    while pid > 1:
        yield pid
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        pid = int(stat.rpartition(")")[2].split()[1])


# ---- errors: no Ray needed --------------------------------------------------------------------


def test_without_ray_the_ray_executor_is_one_line(tiny_bert, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    args = ["study", "--strategies", "full", "--model", tiny_bert, "--task", "sst2"]
    code = main([*args, "--out-root", str(tmp_path), "--executor", "ray"])
    line = assert_one_line_error(code, capsys.readouterr().err)
    assert line == "--executor ray needs Ray: pip install 'freezetune[ray]'"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="needs Ray"):
        run_study(StudySpec.from_dict({"name": "s"}), tmp_path, executor="ray")


RAY = ("--executor", "ray")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ([*RAY, "--run-resources", "cpu=two"], "bad --run-resources 'cpu=two' ('cpu=two'): use"),
        ([*RAY, "--run-resources", "cpu"], "bad --run-resources 'cpu'"),
        ([*RAY, "--run-resources", "cpu=1,gpu=-1"], "('gpu=-1')"),
        ([*RAY, "--run-resources", "cpu=1,CPU=2"], "cpu is given twice"),
        ([*RAY, "--run-resources", "=2"], "bad --run-resources '=2'"),
        ([*RAY, "--jobs", "2"], "--jobs is for --executor local"),
        (["--run-resources", "cpu=1"], "are for --executor ray"),
        (["--ray-address", "auto"], "are for --executor ray"),
        (["--executor", "spark"], "unknown --executor 'spark'; choose one of: local, ray"),
        (["--keep-models", "some"], "--keep-models must be one of all, best, none"),
    ],
)
def test_bad_executor_options_are_one_line(tmp_path, capsys, flags, needle):
    args = ["study", "--strategies", "full", "--out-root", str(tmp_path)]
    assert_one_line_error(main([*args, *flags]), capsys.readouterr().err, needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("address", ["closed", "nowhere"])
def test_a_ray_address_nothing_answers_at_is_one_line_at_once(tmp_path, capsys, address):
    pytest.importorskip("ray")
    if address == "closed":
        address = f"127.0.0.1:{free_port()}"  # nothing listens there now
    args = ["study", "--strategies", "full", "--out-root", str(tmp_path), *RAY]
    code = main([*args, "--ray-address", address])
    needle = "bad --ray-address 'nowhere'" if address == "nowhere" else "cannot reach the Ray"
    assert_one_line_error(code, capsys.readouterr().err, needle)
    assert list(tmp_path.iterdir()) == []


def test_run_resources_become_ray_options():
    assert parse_resources(None) == {"cpu": 1.0}
    assert parse_resources("gpu=1") == {"cpu": 1.0, "gpu": 1.0}
    assert parse_resources(" CPU = 2 , gpu=0.5, node:a=1") == {"cpu": 2, "gpu": 0.5, "node:a": 1}


def test_a_node_that_does_not_see_the_study_folder_is_named(tmp_path):
    (tmp_path / "marker").write_text("ours\n")
    _check_shared(SharedFolder(str(tmp_path / "marker"), "ours", str(tmp_path), "/"), "10.0.0.9")
    for marker, why in (("marker", "another study process's"), ("gone", "missing")):
        shared = SharedFolder(str(tmp_path / marker), "theirs", str(tmp_path), "/")
        with pytest.raises(UserError, match=f"Ray node 10.0.0.9 does not see .*{why}.*shared"):
            _check_shared(shared, "10.0.0.9")


# ---- one machine: a local Ray cluster ---------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import builtins

    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ft-ray-", dir="/tmp")
    printer = builtins.print  # ray.init wraps it; later tests of this process want it back
    with pytest.MonkeyPatch.context() as mp:
        for key, value in RAY_ENV.items():
            mp.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level="WARNING")
    try:
        yield ray
    finally:
        builtins.print = printer
        ours = {pid: start for pid, start in tree(os.getpid()).items() if is_ray(pid, temp)}
        ray.shutdown()
        stop_processes([], also=ours)
        shutil.rmtree(temp, ignore_errors=True)


def tiny_spec(tiny_bert: str, name: str) -> StudySpec:
    return StudySpec.from_dict(
        {
            "name": name,
            "base": {
                "model": {"name": tiny_bert},
                "data": {"task": "sst2", "max_train_samples": 48, "max_eval_samples": 16,
                         "max_length": 24},
                "train": {"epochs": 2, "batch_size": 16, "threads": 1, "progress": False},
                "optim": {"lr": 1e-3},
            },
            "strategies": ["full", "bottom:1"],  # bottom:9 would stop the preflight
            "seeds": [0, 1],
        }
    )  # fmt: skip


def metrics(row: sqlite3.Row) -> dict:
    """What a run measured, without its clocks, memory and where it ran."""

    def strip(record: dict) -> dict:
        return {k: v for k, v in record.items() if not k.endswith(("_s", "_time", "at"))}

    result = json.loads(row["result"] or "null") or {}
    return {
        "status": row["status"],
        "error": row["error"],
        "best": strip(result.get("best") or {}),
        "final": strip(result.get("final") or {}),
        "steps": result.get("steps"),
        "curve": [strip(e) for e in json.loads(row["curve"])],
        "timeline": [strip(e) for e in json.loads(row["timeline"])],
    }


def test_ray_gives_the_local_executors_metrics_bit_for_bit(tiny_bert, tmp_path, local_ray):
    spec = tiny_spec(tiny_bert, "same")
    local = run_study(spec, tmp_path / "local", progress=False, report=False)
    remote = run_study(spec, tmp_path / "ray", executor="ray", progress=False, report=False)
    assert (local.succeeded, local.failed) == (remote.succeeded, remote.failed) == (4, 0)
    here = {r["run_id"]: r for r in rows_of(local.folder)}
    there = {r["run_id"]: r for r in rows_of(remote.folder)}
    assert here.keys() == there.keys() and len(here) == 4
    for run_id, row in here.items():
        assert metrics(row) == metrics(there[run_id]), row["strategy"]
        if row["status"] == "succeeded":
            assert json.loads(there[run_id]["result"])["executor"]["name"] == "ray"
            assert json.loads(row["result"])["executor"]["name"] == "local"
            # the checkpoints Ray's runs wrote (for retries) are gone once they succeeded
            assert not (remote.folder / "runs" / run_id / "checkpoints").exists()
    assert (remote.folder / ".shared-folder-check").is_file()


def test_a_task_that_cannot_see_the_study_folder_stops_the_study(
    tiny_bert, tmp_path, local_ray, monkeypatch
):
    from freezetune.study.executors import ray_cluster

    real = ray_cluster._share

    def elsewhere(folder: Path) -> SharedFolder:
        shared = real(folder)
        return SharedFolder(str(folder / "not-here"), shared.token, shared.notes, shared.cwd)

    monkeypatch.setattr(ray_cluster, "_share", elsewhere)
    # one run at a time: two runs failing at once would end while the study cancels them
    one_at_a_time = ray_cluster.RayExecutor(resources={"cpu": 2})
    with pytest.raises(UserError, match=r"does not see the study folder .* \(its .* is missing"):
        run_study(tiny_spec(tiny_bert, "unshared"), tmp_path, executor=one_at_a_time, report=False)
    rows = rows_of(tmp_path / "unshared")
    assert rows and {r["status"] for r in rows} == {"running"}  # continued by the next call
    assert not any((tmp_path / "unshared" / "runs").glob("*/result.json"))


# ---- the study process killed ------------------------------------------------------------------


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"the study ended before {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def checkpointed(folder: Path) -> list[str]:
    """The runs that have a checkpoint and no result yet."""
    found = {p.parent.parent.name for p in (folder / "runs").glob("*/checkpoints/step-*")}
    return [run for run in found if not (folder / "runs" / run / "result.json").exists()]


def newest_checkpoint(out: Path) -> int | None:
    return max((int(p.name[5:]) for p in out.glob("checkpoints/step-*")), default=None)


def assert_one_finished_row_per_run(folder: Path) -> list[sqlite3.Row]:
    rows = rows_of(folder)
    assert len(rows) == 4 and len({r["run_id"] for r in rows}) == 4
    assert {r["status"] for r in rows} == {"succeeded"}, [(r["strategy"], r["error"]) for r in rows]
    for row in rows:
        steps = [e["step"] for e in json.loads(row["curve"])]
        assert steps == sorted(set(steps)) and len(steps) == 3  # no eval counted twice
    return rows


def test_a_killed_study_process_continues_without_duplicates(tiny_bert, tmp_path):
    pytest.importorskip("ray")
    folder, log = tmp_path / "grid", (tmp_path / "first.log").open("w")
    cmd = study_cmd(tiny_bert, tmp_path)  # no --ray-address: it starts a local cluster
    first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env())
    cluster: dict[int, str] = {}
    try:
        done = lambda: any(r["status"] == "succeeded" for r in rows_of(folder))  # noqa: E731
        wait_for(lambda: folder.joinpath("results.sqlite").is_file() and done(), first, "a run")
        running = {r["run_id"] for r in rows_of(folder) if r["status"] == "running"}
        wait_for(lambda: set(checkpointed(folder)) & running, first, "a checkpoint")
        cluster = tree(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        # its local cluster and the runs on it die with it (the node's agents notice later)
        deadline = time.monotonic() + 20
        while (left := running_on(cluster)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left
        # what the rerun finds of the runs in flight: a checkpoint, or (a run that finished
        # while its cluster went down) a result
        found = {run_id: newest_checkpoint(folder / "runs" / run_id) for run_id in running}
        results = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("runs/*/result.json")}
        again = subprocess.run(cmd, capture_output=True, text=True, env=env())
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        log.close()
        if first.poll() is None:
            first.kill()
        stop_processes([], also=cluster)
    rows = {r["run_id"]: r for r in assert_one_finished_row_per_run(folder)}
    assert {rows[run_id]["attempts"] for run_id in running} == {2}  # in flight: ran again
    assert any(found.values())
    for run_id, step in found.items():
        resumed = json.loads(rows[run_id]["result"])["executor"]["resumed_from"]
        if run_id in results:  # read back, not trained again
            assert resumed is None
            assert (folder / "runs" / run_id / "result.json").stat().st_mtime_ns == results[run_id]
        else:
            assert resumed == step, again.stderr


def test_ctrl_c_cancels_the_clusters_runs_and_leaves_the_store_consistent(tiny_bert, tmp_path):
    pytest.importorskip("ray")
    folder, log = tmp_path / "grid", (tmp_path / "driver.log").open("w")
    as_at_a_terminal = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    cmd = study_cmd(tiny_bert, tmp_path)
    driver = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env(), preexec_fn=as_at_a_terminal
    )
    cluster: dict[int, str] = {}
    try:
        wait_for(lambda: checkpointed(folder), driver, "a checkpoint")
        cluster = tree(driver.pid)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(60) == 130
        deadline = time.monotonic() + 20
        while (left := running_on(cluster)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left  # the runs were cancelled, the local cluster stopped
    finally:
        log.close()
        if driver.poll() is None:
            driver.kill()
        stop_processes([], also=cluster)
    assert "freezetune: interrupted" in (tmp_path / "driver.log").read_text()
    rows = rows_of(folder)  # in flight: still "running", continued by the next call
    assert rows and {r["status"] for r in rows} <= {"running", "succeeded"}
    assert "running" in {r["status"] for r in rows}


# ---- two nodes on one machine: one lost mid-study ----------------------------------------------


@pytest.fixture
def two_nodes():
    pytest.importorskip("ray")
    ray = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="ft-ray2-", dir="/tmp")  # short: socket paths have a limit
    port, node_port = free_port(), free_port()
    common = ["--block", "--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1"]
    common += ["--disable-usage-stats"]
    head = [ray, "start", "--head", f"--port={port}", f"--temp-dir={temp}/head", *common]
    head += ["--include-dashboard=false", f"--system-config={HEAD_CONFIG}"]
    node = [ray, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={temp}/node", *common]
    node += [f"--node-manager-port={node_port}"]
    started: list[subprocess.Popen] = []
    try:
        started.append(subprocess.Popen(head, env=env(), stdout=subprocess.DEVNULL))
        wait_for(lambda: Path(temp, "head", "ray_current_cluster").is_file(), started[0], "head")
        started.append(subprocess.Popen(node, env=env(), stdout=subprocess.DEVNULL))
        wait_for(lambda: raylet_of(node_port), started[1], "the second node's raylet", 60)
        yield f"127.0.0.1:{port}", raylet_of(node_port)[0]
    finally:
        stop_processes(started)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_node_lost_mid_study_costs_no_run(tiny_bert, tmp_path, two_nodes):
    address, raylet = two_nodes
    folder, log = tmp_path / "grid", (tmp_path / "driver.log").open("w")
    cmd = study_cmd(tiny_bert, tmp_path, "--ray-address", address)
    driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env())
    victim: list[str] = []

    def on_second_node_with_checkpoint() -> bool:
        for note in (folder / ".where").glob("*.json"):
            pid = json.loads(note.read_text() or "{}").get("pid", 0)
            if note.stem in checkpointed(folder) and raylet in ancestors(pid):
                victim.append(note.stem)
                return True
        return False

    try:
        wait_for(on_second_node_with_checkpoint, driver, "a run on the second node")
        # a lost node loses every process on it at once: SIGKILL on the raylet alone leaves its
        # workers running until they notice, long enough for the victim to finish its run
        for pid in tree(raylet):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert driver.wait(180) == 0, (tmp_path / "driver.log").read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    rows = {r["run_id"]: r for r in assert_one_finished_row_per_run(folder)}
    assert {r["attempts"] for r in rows.values()} == {1}  # Ray retried it, not the study
    executed = json.loads(rows[victim[0]]["result"])["executor"]
    assert executed["resumed_from"], (tmp_path / "driver.log").read_text()
