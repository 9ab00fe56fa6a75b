"""Starting and stopping a real ``tritonserver`` on an exported model repository.

The binary is the one on PATH (the Merlin container) or else the one shipped in the
``nvidia-pytriton`` wheel. That wheel's server has only the python backend, whose stub
runs an isolated interpreter: it finds this environment's packages through the ``python3``
first on PATH (``PYTHONPATH`` is ignored), and its shared libraries through
LD_LIBRARY_PATH, so both are set for it here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import tritonclient.grpc.model_config_pb2 as model_config
from google.protobuf import text_format

from t4r_app.errors import ServeError
from t4r_app.serve.export import EXPORT_INFO, gpu_problem
from t4r_app.serve.contract import ENSEMBLE_NAME
from t4r_app.serve.versions import ADMIN_HEADER, admin_key

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB = "triton_python_backend_stub"
NO_GPU_IN_TRITON = "has kind KIND_GPU but no GPUs are available"  # tritonserver's words for it
# The files of a repository that name this project's modules: the python backend imports what
# model.py names, and merlin unpickles the ensemble's operators from their modules.
CODE_FILES = ("1/model.py", "1/ensemble/ensemble.pkl")
# No word boundary before it: in a pickle the byte in front is an opcode or a length, which may be a letter.
PROJECT_MODULE = re.compile(rb"t4r_app(?:\.\w+)+")


@dataclass
class TritonBinary:
    path: Path
    backend_dir: Path | None = None  # None: the binary's own default
    env: dict[str, str] = field(default_factory=dict)


def _pytriton_binary() -> TritonBinary | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / STUB
    if not binary.is_file() or not stub.is_file():
        return None
    # The python backend wants its library, its utils module and the stub for this Python
    # side by side in <backend-dir>/python; the wheel keeps the stubs apart, one per version.
    backend_dir = Path(os.environ.get("T4R_APP_CACHE", Path.home() / ".cache" / "t4r-app")) / f"triton-backends-py{version}"
    python_dir = backend_dir / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in [*(root / "backends" / "python" / name for name in BACKEND_FILES), stub]:
        target = python_dir / source.name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copy2(source, target)
    libraries = [sysconfig.get_config_var("LIBDIR") or "", str(root.parent.parent / "nvidia_pytriton.libs")]
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "LD_LIBRARY_PATH": os.pathsep.join([*libraries, os.environ.get("LD_LIBRARY_PATH", "")]),
    }
    return TritonBinary(binary, backend_dir, env)


def find_tritonserver() -> TritonBinary:
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonBinary(Path(on_path))
    shipped = _pytriton_binary()
    if shipped:
        return shipped
    raise ServeError(
        "no tritonserver found: run inside the Merlin container (tritonserver on PATH) or install "
        "the nvidia-pytriton wheel, which ships one (`make setup` does: pip install --no-deps nvidia-pytriton==0.7.0)"
    )


def check_port_free(host: str, port: int, role: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServeError(f"{role} port {port} on {host} is not free ({error.strerror}): choose another with --{role}-port") from None


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_repository(repository: Path) -> None:
    if not repository.is_dir():
        raise ServeError(f"model repository not found: {repository} (create it with `t4r-app export`)")
    if not (repository / ENSEMBLE_NAME / "config.pbtxt").is_file():
        raise ServeError(f"{repository} is not an exported repository: {ENSEMBLE_NAME}/config.pbtxt is missing")
    missing = missing_modules(repository)
    if missing:
        raise ServeError(
            f"{repository} was exported by an earlier version of t4r-app: it needs {', '.join(missing)}, which this "
            f"version no longer has. Export it again: t4r-app export --run {exported_from(repository)} --output {repository}"
        )


def exported_from(repository: Path) -> str:
    """The run directory the repository was exported from, as its export info records it; else RUN_DIR."""
    try:
        return str(json.loads((repository / EXPORT_INFO).read_text())["run_dir"])
    except (OSError, ValueError, KeyError, TypeError):  # no file, not JSON, or not the fields export writes
        return "RUN_DIR"


def missing_modules(repository: Path) -> list[str]:
    """This project's modules that the repository's code names but this version lacks (sorted)."""
    named = set()
    for name in CODE_FILES:
        path = repository / ENSEMBLE_NAME / name
        if path.is_file():
            named.update(match.decode() for match in PROJECT_MODULE.findall(path.read_bytes()))
    return sorted(module for module in named if not _importable(module))


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is gone
        return False


def wants_gpu(repository: Path) -> bool:
    """Whether the exported model asks Triton for a GPU instance (``export --target gpu``)."""
    config = text_format.Parse((repository / ENSEMBLE_NAME / "config.pbtxt").read_text(), model_config.ModelConfig())
    return any(group.kind == model_config.ModelInstanceGroup.Kind.KIND_GPU for group in config.instance_group)


def no_gpu_message(repository: Path, reason: str) -> str:
    return (
        f"{repository} was exported with --target gpu and its model needs a GPU, but {reason}. "
        "Serve it on a machine with a CUDA GPU, or export again with --target cpu"
    )


def check_device(repository: Path) -> None:
    """Refuse a gpu export before starting a server that could not load it."""
    problem = gpu_problem() if wants_gpu(repository) else None
    if problem:
        raise ServeError(no_gpu_message(repository, problem))


def exit_message(repository: Path, returncode: int, log: str, tail_lines: int = 25) -> str:
    """Why tritonserver exited, in its log's words, led by what to do where the cause is known."""
    lines = log.splitlines()
    message = f"tritonserver exited with code {returncode}:\n" + "\n".join(lines[-tail_lines:])
    refusal = next((line for line in lines if NO_GPU_IN_TRITON in line), None)
    if refusal:  # the log's tail is its status tables by then: the refusal itself goes first
        return f"{no_gpu_message(repository, 'tritonserver sees no GPU')}\n{refusal}\n{message}"
    return message


def process_tree_rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and all its descendants, in MB, read from /proc (0 where there is none)."""
    proc = Path("/proc")
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if entry.name.isdigit():
            try:  # the parent pid is the second field after the ")" that closes the command name
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = (proc / str(current) / "status").read_text()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(total_kb / 1024, 1)


class TritonServer:
    """A tritonserver process; use as a context manager or call start() and stop()."""

    def __init__(
        self,
        repository: str | Path,
        host: str = DEFAULT_HOST,
        http_port: int = DEFAULT_PORTS["http"],
        grpc_port: int = DEFAULT_PORTS["grpc"],
        metrics_port: int = DEFAULT_PORTS["metrics"],
        log_path: str | Path | None = None,
    ):
        self.repository = Path(repository).resolve()
        self.host = host
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.log_path = Path(log_path) if log_path else self.repository.parent / f"{self.repository.name}.triton.log"
        self.process: subprocess.Popen | None = None
        self.admin_key = ""  # the repository's model-control key, read when the server starts

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['grpc']}"

    def command(self, binary: TritonBinary) -> list[str]:
        command = [
            str(binary.path),
            f"--model-repository={self.repository}",
            f"--http-address={self.host}",
            f"--http-port={self.ports['http']}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports['grpc']}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.ports['metrics']}",
            "--exit-timeout-secs=5",
            # Every model loaded at start; new versions only when asked (`t4r-app export --into ... --server`),
            # by a request that carries the repository's admin key (serve/versions.py).
            "--model-control-mode=explicit",
            "--load-model=*",
            f"--http-restricted-api=model-repository:{ADMIN_HEADER}={self.admin_key}",
            f"--grpc-restricted-protocol=model-repository:{ADMIN_HEADER}={self.admin_key}",
        ]
        if binary.backend_dir:
            command.append(f"--backend-directory={binary.backend_dir}")
        return command

    def start(self, timeout: float = 180.0) -> "TritonServer":
        check_repository(self.repository)
        check_device(self.repository)
        for role, port in self.ports.items():
            check_port_free(self.host, port, role)
        self.launch(find_tritonserver())
        return self.wait_ready(timeout)

    def launch(self, binary: TritonBinary) -> None:
        """Start the process without start()'s checks; wait_ready() then says whether it came up."""
        self.admin_key = admin_key(self.repository)
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            self.command(binary), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **binary.env}, start_new_session=True
        )
        log.close()

    def wait_ready(self, timeout: float) -> "TritonServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
                raise ServeError(exit_message(self.repository, self.process.returncode, log))
            if self.ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise ServeError(f"tritonserver was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def rss_mb(self) -> float:
        """Resident memory of the server and its children (the python backend's stubs), in MB; 0 once stopped."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        return process_tree_rss_mb(self.process.pid)

    def log_tail(self, lines: int = 25) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def stopped_by_signals():
    """Ctrl-C and SIGTERM raise KeyboardInterrupt inside, also in a process started in the
    background (where the shell leaves SIGINT ignored); the previous handlers come back after."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_until_stopped(server: TritonServer, metrics_port: int) -> int:
    """Wait while ``server`` runs: 0 when stopped by a signal, 1 (with its log's tail) when it exits."""
    print(
        f"ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.host}:{metrics_port}; Ctrl-C stops it",
        flush=True,
    )
    try:
        while server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping tritonserver ...", flush=True)
        return 0
    print(f"tritonserver exited with code {server.process.returncode}:\n{server.log_tail()}", file=sys.stderr)
    return 1
