"""A dask.distributed scheduler and workers started as separate processes, the way a user starts them.

The test of the existing-cluster path (tests/test_distributed.py) and the cluster run of the
ETL benchmark (bench/bench_etl.py --cluster) share this: both need the `dask scheduler` and
`dask worker` commands a user types, not an in-process LocalCluster, so that nothing (imports,
working directory, memory) is shared with the client by accident.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
# Guards against orphans if the caller is killed without running its clean-up: workers leave
# when they lose the scheduler for this long, and the scheduler when it has run nothing for as long.
WORKER_DEATH_TIMEOUT = "60s"
SCHEDULER_IDLE_TIMEOUT = "15m"


class ClusterStartError(RuntimeError):
    pass


@dataclass
class DaskProcesses:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path | None = None

    def worker_pids(self) -> dict[str, int]:
        """{worker name: pid of the worker process itself}, not of its nanny: the process that holds the data."""
        return self._on_each_worker(os.getpid)

    def tasks_executed(self) -> dict[str, int]:
        """{worker name: tasks it has run}: proof that work reached the workers and did not run in the client."""
        return self._on_each_worker(lambda dask_worker: dask_worker.state.executed_count)

    def _on_each_worker(self, function) -> dict[str, object]:
        from distributed import Client

        with Client(self.address) as client:
            names = {address: info["name"] for address, info in client.scheduler_info()["workers"].items()}
            return {str(names[address]): result for address, result in client.run(function).items()}


def dask_command(name: str) -> list[str]:
    """The `dask NAME` command of this interpreter's environment (the module form if the script is absent)."""
    script = Path(sys.executable).parent / "dask"
    if script.exists():
        return [str(script), name]
    return [sys.executable, "-m", f"distributed.cli.dask_{name}"]


def worker_environment() -> dict[str, str]:
    """The environment for `dask worker`: this repository importable.

    The NVTabular workflow's own operators (workflow.ops) reach the workers pickled by reference,
    module and class name, so each worker must import `workflow` itself. A console script puts its
    own bin/ folder on sys.path, not the working directory, so starting it from the repository root
    is not enough where the project is not installed in the workers' environment: PYTHONPATH is.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _log_tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return f"({path} not written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _start(command: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)


def _wait_for_scheduler_file(scheduler: subprocess.Popen, scheduler_file: Path, log: Path, timeout: float) -> str:
    """The address the scheduler chose (it binds port 0, so no other process can hold it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            raise ClusterStartError(
                f"dask scheduler exited with code {scheduler.returncode} before listening; its log:\n{_log_tail(log)}"
            )
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(scheduler_file.read_text())["address"]
        time.sleep(0.2)
    raise ClusterStartError(f"dask scheduler wrote no {scheduler_file} within {timeout:.0f} s; its log:\n{_log_tail(log)}")


def wait_for_workers(processes: DaskProcesses, n_workers: int, timeout: float) -> None:
    """Return once n_workers are connected to the scheduler; fail with the workers' logs otherwise."""
    from distributed import Client

    deadline = time.monotonic() + timeout
    connected = 0
    with Client(processes.address, timeout=f"{timeout}s") as client:
        while time.monotonic() < deadline:
            exited = [w for w in processes.workers if w.poll() is not None]
            if exited:
                raise ClusterStartError(f"a dask worker exited while starting:\n{_worker_logs(processes)}")
            connected = len(client.scheduler_info()["workers"])
            if connected >= n_workers:
                return
            time.sleep(0.25)
    raise ClusterStartError(
        f"{connected} of {n_workers} dask workers connected to {processes.address} within {timeout:.0f} s:\n"
        f"{_worker_logs(processes)}"
    )


def _worker_logs(processes: DaskProcesses) -> str:
    logs = sorted(processes.log_dir.glob("worker-*.log")) if processes.log_dir else []
    return "\n".join(f"--- {log.name}:\n{_log_tail(log)}" for log in logs)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (dask closes its nanny and worker cleanly), SIGKILL if it hangs, then any child left behind."""
    if process.poll() is not None:
        return
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@contextlib.contextmanager
def dask_processes(
    n_workers: int, work_dir: Path, memory_limit: str = "2GB", timeout: float = START_TIMEOUT_S
) -> Iterator[DaskProcesses]:
    """`dask scheduler` and n_workers single-threaded `dask worker`s on 127.0.0.1, stopped on exit.

    Logs go to work_dir/*.log. Each worker runs in a folder of its own, not the caller's working
    directory, as on a real cluster: a relative path the client hands over would not resolve there.
    """
    # The processes start in folders of their own: the paths handed to them must not be relative.
    work_dir = Path(work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    scheduler_file = work_dir / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    scheduler_log = work_dir / "scheduler.log"
    scheduler = _start(
        [
            *dask_command("scheduler"),
            "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", str(scheduler_file), "--idle-timeout", SCHEDULER_IDLE_TIMEOUT,
        ],
        scheduler_log,
        cwd=work_dir,
    )
    processes = DaskProcesses(address="", scheduler=scheduler, log_dir=work_dir)
    try:
        processes.address = _wait_for_scheduler_file(scheduler, scheduler_file, scheduler_log, timeout)
        for index in range(n_workers):
            folder = work_dir / f"worker-{index}"
            processes.workers.append(
                _start(
                    [
                        *dask_command("worker"), processes.address,
                        "--host", "127.0.0.1", "--nthreads", "1", "--memory-limit", memory_limit,
                        "--no-dashboard", "--name", f"worker-{index}", "--local-directory", str(folder),
                        "--death-timeout", WORKER_DEATH_TIMEOUT,
                    ],
                    work_dir / f"worker-{index}.log",
                    cwd=folder,
                    env=worker_environment(),
                )
            )
        wait_for_workers(processes, n_workers, timeout)
        yield processes
    finally:
        for process in [*processes.workers, scheduler]:
            _stop(process)

