"""Reading the parquet parts that NVTabular and the interaction writer leave in a folder."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset  # noqa: F401  (registers pa.dataset)

from t4r_app.data.sources import natural_key


def read_parquet_columns(directory: Path, columns: list[str]) -> pa.Table:
    """The given columns of every part in a merlin output folder, in file order."""
    # Natural order: part_10 after part_9, so rows come back in the order they were written.
    files = sorted(Path(directory).glob("*.parquet"), key=lambda p: natural_key(p.name))
    return pa.dataset.dataset([str(f) for f in files], format="parquet").to_table(columns=columns)
