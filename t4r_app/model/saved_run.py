"""The files of a run directory and the reloadable model inside it.

The model is stored as its weights plus the dataset schema it was built from; the
architecture comes back from ``RUN_DIR/config.yaml`` through the same ``build_model``,
so a reloaded model is the trained one, not a pickled snapshot of library internals.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from merlin.io import Dataset
from merlin.schema import Schema
from merlin.schema.io.tensorflow_metadata import TensorflowMetadata

from t4r_app.atomic import building, leftovers
from t4r_app.config import AppConfig, load_config
from t4r_app.errors import RunError
from t4r_app.model.architecture import build_model, item_schema, max_sequence_length, trainer_metric
from t4r_app.model.device import default_device
from t4r_app.model.inference import inference_length
from t4r_app.model.item_features import FEATURES_FILE, ItemFeatures

CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"
WEIGHTS = "weights.pt"
SCHEMA = "schema.pbtxt"
CONFIG = "config.yaml"
RUN_INFO = "run.json"
ITEM_MAPPING = "item_mapping.parquet"
ETL_WORKFLOW = "etl_workflow"
MONITOR_METRIC = trainer_metric("ndcg")  # validation NDCG@10, what early stopping watches


@dataclass
class RunInfo:
    data_dir: str
    device: str
    torch: str
    transformers4rec: str
    transformers: str
    # The seen-movie rule of predict, recommend and export (serve.exclude_seen resolved on the
    # training data); runs trained before it existed keep seen movies.
    exclude_seen: bool = False
    exclude_seen_reason: str = ""
    # Every config value training chose from the data (a key that said `auto`): key, value, why.
    auto_choices: list = field(default_factory=list)
    # train --init-from: the run whose weights this one started from ("" for a fresh start).
    parent_run: str = ""


def load_schema(split_dir: str | Path) -> Schema:
    return Dataset(str(split_dir), engine="parquet", cpu=True).schema


def write_run_info(run_dir: Path, info: RunInfo) -> None:
    (run_dir / RUN_INFO).write_text(json.dumps(asdict(info), indent=2))


def read_run_info(run_dir: Path) -> RunInfo:
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise RunError(f"{run_dir} is not a training run (no {RUN_INFO}): train one with `t4r-app train`")
    return RunInfo(**json.loads(path.read_text()))


def save_model(
    model: torch.nn.Module, schema: Schema, run_dir: Path, data_dir: Path, features: ItemFeatures | None = None
) -> Path:
    """Weights, schema, item features, movie mapping, ETL workflow: what inference and export need, without the data dir."""
    # Written beside RUN_DIR/model and renamed into place: a kill never leaves a half-saved model.
    directory = Path(run_dir) / MODEL_DIR
    with building(directory) as partial:
        torch.save(model.state_dict(), partial / WEIGHTS)
        if features is not None:
            features.save(partial / FEATURES_FILE)
        TensorflowMetadata.from_merlin_schema(schema).to_proto_text_file(str(partial), SCHEMA)
        shutil.copyfile(Path(data_dir) / ITEM_MAPPING, partial / ITEM_MAPPING)
        # The fitted NVTabular workflow goes along, so that export needs nothing but the run.
        shutil.copytree(Path(data_dir) / "workflow", partial / ETL_WORKFLOW, dirs_exist_ok=True)
    return directory


def scorable_rows(mapping: pd.DataFrame, features: ItemFeatures | None) -> pd.DataFrame:
    """The mapping's rows the model may score (all of them for runs from before titles)."""
    if features is None:
        return mapping
    return mapping[features.scorable[mapping["item_id"].to_numpy()]].reset_index(drop=True)


@dataclass
class LoadedRun:
    run_dir: Path
    config: AppConfig
    info: RunInfo
    schema: Schema
    model: torch.nn.Module
    features: ItemFeatures | None = None

    @property
    def session_length(self) -> int:
        """How many of a session's latest items the model reads (``model.inference.inference_length``)."""
        return inference_length(self.config.model, max_sequence_length(self.schema))


def load_run(run_dir: str | Path, device: str | None = None) -> LoadedRun:
    """The trained model of a run, in eval mode, with its config and schema."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    weights = run_dir / MODEL_DIR / WEIGHTS
    if not weights.is_file():
        half_saved = " (a model was being saved when it stopped)" if leftovers(run_dir / MODEL_DIR) else ""
        raise RunError(
            f"{run_dir} has no trained model ({weights} is missing): training did not finish{half_saved}; "
            f"continue it with `t4r-app train --data DATA_DIR --output {run_dir} --resume`, or train it again"
        )
    config = load_config(run_dir / CONFIG)
    schema = item_schema(TensorflowMetadata.from_proto_text_file(str(run_dir / MODEL_DIR), SCHEMA).to_merlin_schema())
    features = ItemFeatures.load(run_dir / MODEL_DIR / FEATURES_FILE)
    model = build_model(schema, config.model, config.evaluate.top_ks, features)
    device = device or default_device()
    model.load_state_dict(torch.load(weights, map_location=device))
    model.to(device).eval()
    return LoadedRun(run_dir, config, info, schema, model, features)
