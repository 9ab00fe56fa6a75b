"""Outputs that a killed run never leaves looking complete.

Two ways, by what an output allows:

* built in a temporary sibling (``.NAME.partial-<pid>``) and renamed into place at the end
  (``building``): export's repository, train's ``RUN_DIR/model/``; a kill leaves the sibling,
  never a half-written ``NAME``;
* a completion marker written last and removed first (preprocess's ``stats.json``,
  import's ``import_stats.json``, a checkpoint's ``t4r_complete``), where the output must stay
  where it is (its files record their own paths, or ``--resume`` continues in place).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

PARTIAL = ".partial-"


def partial_sibling(path: Path) -> Path:
    return path.parent / f".{path.name}{PARTIAL}{os.getpid()}"


def leftovers(path: Path) -> list[Path]:
    """Temporary siblings of ``path`` that a killed run left behind."""
    return sorted(path.parent.glob(f".{path.name}{PARTIAL}*")) if path.parent.is_dir() else []


def replace_dir(new: Path, path: Path) -> None:
    """Put the finished directory ``new`` at ``path``, replacing what is there."""
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        new.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(path)


@contextlib.contextmanager
def building(path: str | Path) -> Iterator[Path]:
    """A fresh temporary sibling of ``path`` to write into; it replaces ``path`` when the block ends.

    On an error the sibling is removed and ``path`` is left as it was; on SIGKILL the sibling
    stays (a later run of the same command removes it), and ``path`` is still the old one or absent.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in leftovers(path):
        shutil.rmtree(stale, ignore_errors=True)
    temporary = partial_sibling(path)
    temporary.mkdir()
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    replace_dir(temporary, path)
