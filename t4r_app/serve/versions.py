"""A new model version into a served repository, and the switch of a live server to it.

``add_version`` exports a run as the next version of both models of a repository
(``executor_model/N`` and ``movie_catalogue/N``) beside the one being served: the export is built
in a temporary folder beside the repository, then each version folder is moved into place by one rename, so a crash
at any moment leaves the served version untouched. The configs are replaced the same way.
Versions older than the one before the new one are removed.

``switch`` asks the running server to load the new versions. ``t4r-app serve`` runs Triton with
explicit model control and Triton's default version policy (the latest version), so the old
version answers until the new one is ready, each request is answered wholly by one version, and
the old version is unloaded once the new one serves. Loading models is an administrative act: the
server restricts its model-repository API to requests that carry the key ``serve`` writes into the
repository (``admin_key``, readable by its owner only), so a client that can ask for
recommendations cannot load or unload models.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from t4r_app.errors import ExportError, ServerError
from t4r_app.serve.export import EXPORT_INFO, export_run
from t4r_app.serve.contract import CATALOGUE_MODEL, ENSEMBLE_NAME

ADMIN_KEY_FILE = "admin_key"
ADMIN_HEADER = "admin-key"
VERSIONED_MODELS = (CATALOGUE_MODEL, ENSEMBLE_NAME)  # switched in this order: new movies are known before they are answered


def admin_key(repository: str | Path) -> str:
    """The repository's model-control key, made (owner-only) when it has none."""
    path = Path(repository) / ADMIN_KEY_FILE
    if not path.is_file():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(16))
    return path.read_text().strip()


def versions(repository: str | Path, model: str = ENSEMBLE_NAME) -> list[int]:
    """The version folders of ``model`` in the repository, ascending."""
    folder = Path(repository) / model
    return sorted(int(entry.name) for entry in folder.iterdir() if entry.is_dir() and entry.name.isdigit()) if folder.is_dir() else []


def add_version(run_dir: str | Path, repository: str | Path, exclude_seen: bool | None = None) -> int:
    """Export ``run_dir`` as the next version of ``repository``'s models; returns that version.

    The served export's target, top-k and instance count are kept: clients read the answer's
    shape once, and the server's hardware does not change with the model."""
    repository = Path(repository)
    info_path = repository / EXPORT_INFO
    if not info_path.is_file():
        raise ExportError(f"{repository} is not an exported repository ({EXPORT_INFO} is missing): export it with --output first")
    served = json.loads(info_path.read_text())
    version = max(versions(repository) or [0]) + 1
    for stale in repository.parent.glob(f".{repository.name}.next-*"):  # what a killed earlier run left
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{repository.name}.next-", dir=repository.parent))
    try:
        export = export_run(run_dir, staging / "export", target=served["target"], top_k=served["top_k"],
                            exclude_seen=exclude_seen, instances=served.get("instances", 1))  # fmt: skip
        # One rename per folder: a crash leaves either no new version or a whole one, and the served one as it was.
        for model in VERSIONED_MODELS:
            os.replace(export / model / "1", repository / model / str(version))
        for model in VERSIONED_MODELS:
            os.replace(export / model / "config.pbtxt", repository / model / "config.pbtxt")
        os.replace(export / EXPORT_INFO, info_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for model in VERSIONED_MODELS:  # keep the new version and the one still answering until the switch
        for old in versions(repository, model)[:-2]:
            shutil.rmtree(repository / model / str(old), ignore_errors=True)
    return version


def switch(address: str, repository: str | Path, timeout: float = 300.0) -> None:
    """Ask the server at ``address`` (HTTP host:port) to serve the repository's newest versions."""
    key_path = Path(repository) / ADMIN_KEY_FILE
    if not key_path.is_file():
        raise ServerError(f"{repository} has no {ADMIN_KEY_FILE}: it is written by `t4r-app serve`, which must be serving it")
    for model in VERSIONED_MODELS:
        request = urllib.request.Request(f"http://{address}/v2/repository/models/{model}/load", data=b"{}", method="POST")
        request.add_header(ADMIN_HEADER, key_path.read_text().strip())
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                pass
        except urllib.error.HTTPError as error:
            raise ServerError(f"the server at {address} did not load {model}: {error.code} {error.read().decode()[:500]}") from None
        except (urllib.error.URLError, TimeoutError) as error:
            raise ServerError(f"cannot reach the server at {address} to load {model}: {error}") from None
