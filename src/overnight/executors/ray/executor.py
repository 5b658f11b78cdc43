"""Runs on a Ray cluster: one Ray task per run; the controller stays the only writer.

What travels, with no shared filesystem: once per study, a tar of the start tree (`git
archive`) plus the untracked `protect` files, with a manifest of their hashes, put in Ray's
object store (a node fetches it once and caches it); per run, only the candidate's surface
files, since every candidate is the start tree with only surface files changed (the guard
makes sure). What comes back: the report, the logs (head and tail when huge), traces and
artifacts; they are written into the experiment folder under the same names as the local
executor uses, so `overnight show` cannot tell the difference.

A worker or node that dies mid-run is recorded (an event, `executor.log` in the experiment
folder, a note in the output) and the run is retried, a bounded number of times, after which
it is a crash whose reason says so.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from overnight.errors import UsageError
from overnight.executors.base import BaseExecutor, RunFacts, RunTask, StepFacts
from overnight.executors.ray import cluster as ray_cluster
from overnight.executors.ray import tree as ray_tree
from overnight.executors.ray import worker as ray_worker
from overnight.git.workspace import Workspace
from overnight.isolation.integrity import ProtectedFiles

RETRIES = 2  # extra attempts of a run whose worker or node died
POLL_S = 0.2  # how often a waiting slot looks at the stop flag
STOP_GRACE_S = 10.0  # after a polite cancel, when to kill the worker outright


@dataclass
class _Base:
    key: str
    ref: Any  # ray.ObjectRef of the tar
    manifest: dict[str, str]  # locked path -> digest
    surface: list[str]  # surface files present in the base tree


class _Lost(Exception):
    """The worker or node running the task went away; worth another attempt."""


class _Interrupted(Exception):
    pass


class _Failed(Exception):
    """The task failed for a reason another attempt would not change."""


class RayExecutor(BaseExecutor):
    def __init__(
        self,
        workspace: Workspace,
        surface: list[str],
        protected: ProtectedFiles,
        *,
        address: str = "",
        workers: int = 1,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        retries: int = RETRIES,
        ship_code: bool = False,
    ) -> None:
        self.ws = workspace
        self.surface = list(surface)
        self.protected = protected
        self.slots = workers
        self.address = address or "auto"
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.retries = retries
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._base_lock = threading.Lock()
        self._bases: dict[str, _Base] = {}
        self._identity: dict[str, tuple[str, list[str]]] = {}
        self._ray = ray_cluster.import_ray()
        self._owns_connection = ray_cluster.connect(self._ray, self.address)
        try:
            ray_cluster.check_resources(self._ray, self.address, num_cpus, num_gpus)
            # Whether this overnight package travels with the job (Ray's py_modules): when a
            # node lacks it or has another version, or when asked to (`ship_code`).
            self.ship_code = ray_cluster.ensure_code(
                self._ray, self.address, self._owns_connection, ship_code
            )
        except UsageError:
            self.close()
            raise
        # max_calls=0: keep reusing worker processes even for GPU tasks (Ray's default there
        # is a fresh process per task). The task never touches the GPU itself, only its
        # subprocess does, and a reused process keeps its verified copy of the tree.
        self._fn = self._ray.remote(max_calls=0)(ray_worker.run_task)

    @classmethod
    def from_config(
        cls, cfg: Any, workspace: Workspace, surface: list[str], protected: ProtectedFiles,
        workers: int,
    ) -> RayExecutor:  # fmt: skip
        ex = cfg.executor
        if ex.gpus:
            raise UsageError(
                f"{cfg.path.name}: [executor].gpus pins GPUs of this machine and does not apply "
                'to kind = "ray"; set [executor].num_gpus (GPUs per run) instead'
            )
        return cls(
            workspace, surface, protected, address=ex.address, workers=workers,
            num_cpus=ex.num_cpus, num_gpus=ex.num_gpus,
        )  # fmt: skip

    # == the cluster =======================================================================

    def stop(self) -> None:
        # Only a flag: this may run in a signal handler, where calling into Ray could
        # deadlock. Each waiting slot cancels its own task within POLL_S.
        self._stop.set()

    def close(self) -> None:
        self._bases.clear()  # drops the refs, so the object store can free the trees
        if self._owns_connection and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_connection = False

    def recover(self, marker_prefix: str) -> int:
        """Kill processes of an earlier controller of this study on every node of the
        cluster (after a `kill -9` of the controller); how many there were."""
        answers = ray_cluster.on_each_node(self._ray, ray_worker.reap, marker_prefix, timeout=60)
        return sum(a for a in answers if isinstance(a, int))

    def drain_events(self) -> list[tuple[str, dict[str, Any]]]:
        """Events since the last call, for the controller to put in the ledger."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    # == what travels =======================================================================

    def _candidate(self, commit: str) -> tuple[str, list[str]]:
        with self._lock:
            found = self._identity.get(commit)
        if found is None:
            found = ray_tree.identity(self.ws.root, commit, self.surface)
            with self._lock:
                self._identity[commit] = found
        return found

    def _base(self, identity: str, commit: str) -> _Base:
        with self._base_lock:  # built once; other slots wait for it
            if identity not in self._bases:
                tree = ray_tree.build(self.ws.root, commit, self.surface, self.protected)
                ref = self._ray.put(tree.data)
                self._bases[identity] = _Base(tree.key, ref, tree.manifest, tree.surface)
            return self._bases[identity]

    def _spec(self, task: RunTask, base: _Base, present: list[str]) -> dict[str, Any]:
        task_dict = {f.name: getattr(task, f.name) for f in fields(task)}
        return {
            "protocol": ray_worker.PROTOCOL,
            "task": task_dict,
            "base_key": base.key,
            # Inside a list, so that Ray does not fetch the tree before the task starts: a
            # node that has it cached never transfers it again.
            "base_ref": [base.ref],
            "manifest": base.manifest,
            "files": self.ws.read_files(task.commit, present),
            "remove": [p for p in base.surface if p not in present],
            # A holdout run reads the artifacts of the metric run, made on another node.
            "inputs": {
                var: ray_worker.pack_dir(Path(task.env[var]))
                for var in ("OVERNIGHT_ARTIFACT_DIR",)
                if task.env.get(var) and Path(task.env[var]).is_dir()
            },
            "attempt": 0,
        }

    # == one run ============================================================================

    def run(self, task: RunTask) -> RunFacts:
        if self._stop.is_set():
            return self._failed(task, [], "interrupted", interrupted=True)
        identity, present = self._candidate(task.commit)
        spec = self._spec(task, self._base(identity, task.commit), present)
        lost: list[str] = []
        attempt = 0
        while True:
            spec["attempt"] = attempt
            try:
                result = self._wait(self._submit(task, spec))
            except _Interrupted:
                return self._failed(task, lost, "interrupted", interrupted=True)
            except _Failed as exc:
                return self._failed(task, lost, f"ray: {exc}")
            except _Lost as exc:
                why = str(exc)
                lost.append(why)
                retry = attempt < self.retries
                self._note(task, f"attempt {attempt} lost: {why}" + ("; retrying" if retry else ""))
                self.events.put(("ray_run_lost", {
                    "experiment": task.experiment, "kind": task.kind, "repeat": task.repeat,
                    "attempt": attempt, "error": why, "retry": retry,
                }))  # fmt: skip
                if not retry:
                    kinds = ", ".join(dict.fromkeys(w.split(":", 1)[0] for w in lost))
                    return self._failed(
                        task, lost, f"ray: the worker or node running this run died "
                        f"{len(lost)} times ({kinds}); gave up, see executor.log",
                    )  # fmt: skip
                attempt += 1
                continue
            return self._finish(task, result, lost, attempt)

    def _submit(self, task: RunTask, spec: dict[str, Any]) -> Any:
        return self._fn.options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0,
            retry_exceptions=False, name=f"overnight {task.marker}",
        ).remote(spec)  # fmt: skip

    def _wait(self, ref: Any) -> dict[str, Any]:
        """The task's result; Ray's errors sorted into lost / failed / interrupted."""
        ray = self._ray
        cancelled_at: float | None = None
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=POLL_S)
                if ready:
                    break
                if not self._stop.is_set():
                    continue
                if cancelled_at is None:
                    # KeyboardInterrupt in the worker: run_command kills the run's tree.
                    ray.cancel(ref)
                    cancelled_at = time.monotonic()
                elif time.monotonic() - cancelled_at > STOP_GRACE_S:
                    ray.cancel(ref, force=True)  # the guard kills what the run left
                    raise _Interrupted
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            raise self._classify(exc) from exc

    def _classify(self, exc: Exception) -> Exception:
        ex = self._ray.exceptions
        if isinstance(exc, ex.TaskCancelledError) or (
            isinstance(exc, ex.RayTaskError) and isinstance(exc.cause, KeyboardInterrupt)
        ):
            # Cancelled by us (Ctrl-C), or by someone else (`ray job stop`): then retry.
            return _Interrupted() if self._stop.is_set() else _Lost("the task was cancelled")
        if isinstance(exc, ex.RayTaskError):
            cause = exc.cause
            text = f"{type(cause).__name__}: {cause}"
            stale = (
                isinstance(cause, ray_worker.ProtocolMismatch)
                or (isinstance(cause, ImportError) and "overnight" in str(cause))
                # What Ray says when the node cannot import the task's function at all.
                or "failed to import on the worker" in str(cause)
            )
            if stale:  # a node that joined after the start-up check
                return _Failed(
                    f"the node cannot run overnight's worker ({text}); install the same "
                    "overnight version on every node"
                )
            return _Failed(f"the task failed on the node: {text}")
        if isinstance(exc, ex.RuntimeEnvSetupError | ex.TaskUnschedulableError):
            return _Failed(f"{type(exc).__name__}: {_first_line(exc)}")
        return _Lost(f"{type(exc).__name__}: {_first_line(exc)}")

    # == results ============================================================================

    def _finish(
        self, task: RunTask, result: dict[str, Any], lost: list[str], attempt: int
    ) -> RunFacts:
        exp_dir = Path(task.exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        for name, data in result["logs"].items():
            (exp_dir / Path(name).name).write_bytes(data)
        for var, data in result["dirs"].items():
            dest = Path(task.env.get(var) or exp_dir / var.lower())
            dest.mkdir(parents=True, exist_ok=True)
            if data:
                ray_worker.extract_all(data, dest, trusted=False)  # written by the run
        report = result["report"]
        steps = [
            StepFacts(**{**s, "stdout": str(exp_dir / Path(s["stdout"]).name),
                         "stderr": str(exp_dir / Path(s["stderr"]).name)})
            for s in report["steps"]
        ]  # fmt: skip
        if lost and steps:
            steps[-1].output_tail = _lost_note(lost) + steps[-1].output_tail
        facts = RunFacts(task.experiment, task.repeat, task.kind, steps, list(report["changed"]))
        self._note(task, f"attempt {attempt} ran on node {result['node'][:12]} ({result['host']})"
                   f": setup {result['setup_s']:.2f}s, run {facts.wall_s:.2f}s")  # fmt: skip
        return facts

    def _failed(
        self, task: RunTask, lost: list[str], reason: str, interrupted: bool = False
    ) -> RunFacts:
        if not interrupted:
            self._note(task, reason)
        label = task.commands[0][0] if task.commands else "run"
        exp_dir = Path(task.exp_dir)
        name = task.log_name(label)
        tail = "" if interrupted else (_lost_note(lost) if lost else "") + reason + "\n"
        step = StepFacts(label, None, False, interrupted, 0.0, str(exp_dir / f"{name}.stdout"),
                         str(exp_dir / f"{name}.stderr"), tail)  # fmt: skip
        return RunFacts(task.experiment, task.repeat, task.kind, [step],
                        lost="" if interrupted else reason)  # fmt: skip

    def _note(self, task: RunTask, line: str) -> None:
        """One line in the experiment folder's executor.log: which node ran what, losses."""
        exp_dir = Path(task.exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with (exp_dir / "executor.log").open("a") as fh:
            fh.write(f"{stamp} {task.kind} repeat {task.repeat}: {line}\n")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _lost_note(lost: list[str]) -> str:
    return "".join(f"[ray] attempt {i} lost: {why}\n" for i, why in enumerate(lost))
