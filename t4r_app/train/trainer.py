"""Training BERT4Rec (or SASRec) with T4R's Trainer: periodic validation, early stopping, resumable runs.

A run directory holds everything about one training run::

    RUN_DIR/config.yaml          the resolved configuration
    RUN_DIR/run.json             where the data came from, device, versions, the seen-movie rule
    RUN_DIR/checkpoints/         Trainer checkpoints (model, optimiser, RNG states); --resume
    RUN_DIR/training_log.csv     loss and validation metrics per evaluation
    RUN_DIR/training_curves.png  training loss and validation NDCG@10 per epoch
    RUN_DIR/tensorboard/         TensorBoard event files (when tensorboard is installed)
    RUN_DIR/model/               the best model: weights, schema, item features, movie mapping,
                                 ETL workflow; reloadable and exportable without the data dir
    RUN_DIR/metrics.json         best epoch, best validation metrics, time, throughput, learned scalars
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
import transformers4rec
import transformers4rec.torch as tr
from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from transformers4rec.config.trainer import T4RecTrainingArguments

from t4r_app.atomic import leftovers
from t4r_app.config import AppConfig, save_config
from t4r_app.data.item_sequences import ItemSequences, read_split, resolve_exclude_seen
from t4r_app.data.preprocess_stats import check_complete
from t4r_app.data.split_views import training_histories, withheld_movies
from t4r_app.errors import PreprocessError, TrainingError
from t4r_app.model import auto_settings
from t4r_app.model.architecture import MONITOR_K, build_model, item_schema, max_sequence_length, model_label, vocabulary_size
from t4r_app.model.device import default_device
from t4r_app.model.head import learned_scalars
from t4r_app.model.item_features import build_item_features, features_for_saving
from t4r_app.model.saved_run import (
    CHECKPOINTS,
    CONFIG,
    MODEL_DIR,
    MONITOR_METRIC,
    RunInfo,
    load_schema,
    save_model,
    write_run_info,
)
from t4r_app.train import distributed
from t4r_app.train.log import TrainingLog, TrainingProgress
from t4r_app.train.windows import WindowDataset, WindowLoader, cut_windows
from workflow.columns import movie_ids


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: float
    best_valid_ndcg: float
    epochs_run: float
    stopped_early: bool
    train_seconds: float
    sequences_per_second: float
    device: str
    learned: dict[str, float] = field(default_factory=dict)  # model.head.learned_scalars of the kept model

    def describe(self) -> str:
        """What ``train`` prints."""
        return (
            f"best validation NDCG@10 {self.best_valid_ndcg:.4f} at epoch {self.best_epoch:g} "
            f"({self.epochs_run:g} epochs{', stopped early' if self.stopped_early else ''}; "
            f"{self.train_seconds:.0f} s on {self.device}, {self.sequences_per_second:,.0f} sequences/s)\n"
            f"model in {self.run_dir / 'model'}; curves in {self.run_dir / 'training_curves.png'}"
        )


class EarlyStopping(TrainerCallback):
    """Stop after ``patience`` evaluations without a better monitored metric, never before
    ``min_epochs``; and at the first evaluation past ``time_budget_s`` of training.

    BERT4Rec's validation curve has a long plateau (it learns popularity first, order later),
    so a short patience alone stops it there; ``min_epochs`` carries it past. The patience
    count is recomputed from the Trainer's log history, which checkpoints carry, so a resumed
    run keeps its patience instead of starting the count again.
    """

    def __init__(self, patience: int, min_epochs: float = 0.0, time_budget_s: float = 0.0):
        self.patience = patience
        self.min_epochs = min_epochs
        self.time_budget_s = time_budget_s
        self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        stop = bool(self.time_budget_s) and time.perf_counter() - self.started >= self.time_budget_s
        values = [entry[MONITOR_METRIC] for entry in state.log_history if MONITOR_METRIC in entry]
        if self.patience and values and state.epoch >= self.min_epochs:
            best_index = max(range(len(values)), key=lambda i: (values[i], -i))
            stop |= len(values) - 1 - best_index >= self.patience
        # Ranks' clocks differ: all stop when one does, or the others would wait for it forever.
        if distributed.any_rank(stop):
            control.should_training_stop = True
        return control


def _checkpoint_rng_loading():
    """Let the Trainer reload the RNG states it saved in our own checkpoints.

    torch >= 2.6 loads with ``weights_only=True``, and transformers 4.30 does not say
    otherwise, so the NumPy RNG state in ``rng_state.pth`` would be refused on --resume.
    Only the NumPy types that state is made of are allowed.
    """
    allowed = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    return torch.serialization.safe_globals(allowed)


def _cpu_with_index(storage, location: str):
    return storage.cpu() if location.startswith("cpu:") else None


# On --resume, transformers 4.30 loads the optimizer state onto args.device in a multi-process
# run; without CUDA accelerate makes that "cpu:0", a location torch's own loader refuses. This
# loader handles only such locations and leaves every other to torch.
torch.serialization.register_package(100, lambda storage: None, _cpu_with_index)


def _check_complete(data_dir: Path) -> None:
    try:
        check_complete(data_dir)
    except PreprocessError as error:
        raise TrainingError(str(error)) from None


def _check_data(data_dir: Path) -> None:
    if (data_dir / CONFIG).is_file():  # preprocess started here: say so if it did not finish
        _check_complete(data_dir)
    for split in ("train", "valid"):
        if not (data_dir / split / "schema.pbtxt").is_file():
            raise TrainingError(f"{data_dir / split} has no schema.pbtxt: is {data_dir} the output of `t4r-app preprocess`?")
    _check_complete(data_dir)


# Written into a checkpoint after the Trainer has saved all of it (on_save): a checkpoint
# without it was being written when the run was killed, and --resume passes it over.
CHECKPOINT_COMPLETE = "t4r_complete"


class MarkCompleteCheckpoints(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / CHECKPOINT_COMPLETE).touch()
        return control


def _checkpoint_step(folder: Path) -> int:
    try:
        return int(folder.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


# In RUN_DIR/checkpoints of every run that marks its checkpoints (all but runs from before the marks).
MARKS_CHECKPOINTS = ".t4r_marks_checkpoints"


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint saved whole; runs from before the mark fall back to the Trainer's rule."""
    if not checkpoints.is_dir():
        return None
    folders = [f for f in checkpoints.glob("checkpoint-*") if f.is_dir() and _checkpoint_step(f) >= 0]
    if not (checkpoints / MARKS_CHECKPOINTS).is_file() and not any((f / CHECKPOINT_COMPLETE).is_file() for f in folders):
        return get_last_checkpoint(str(checkpoints))
    complete = [f for f in folders if (f / CHECKPOINT_COMPLETE).is_file()]
    return str(max(complete, key=_checkpoint_step)) if complete else None


def _drop_incomplete_checkpoints(checkpoints: Path, last: str) -> None:
    """Checkpoints a killed run was writing (after the last complete one), and a half-saved model."""
    for folder in checkpoints.glob("checkpoint-*"):
        if _checkpoint_step(folder) > _checkpoint_step(Path(last)):
            print(f"--resume: removing {folder}, which the interrupted run did not finish writing", flush=True)
            shutil.rmtree(folder, ignore_errors=True)


def _prepare_run_dir(run_dir: Path, resume: bool) -> str | None:
    checkpoints = run_dir / CHECKPOINTS
    last = last_complete_checkpoint(checkpoints)
    if resume and last is None:
        raise TrainingError(
            f"--resume: {checkpoints} has no checkpoint to continue from "
            "(the run stopped before its first complete checkpoint): train again without --resume"
        )
    if not resume and last is not None:
        raise TrainingError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --output")
    if distributed.is_main_process():
        if resume:
            _drop_incomplete_checkpoints(checkpoints, last)
        else:  # only checkpoints a run killed during its first save: start afresh
            shutil.rmtree(checkpoints, ignore_errors=True)
            checkpoints.mkdir(parents=True)
            (checkpoints / MARKS_CHECKPOINTS).touch()
        for stale in leftovers(run_dir / MODEL_DIR):
            shutil.rmtree(stale, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return last


def training_arguments(
    config: AppConfig, run_dir: Path, max_length: int, vocabulary: int, steps_per_epoch: int
) -> T4RecTrainingArguments:
    train = config.train
    eval_steps = steps_per_epoch * train.eval_every_epochs
    return T4RecTrainingArguments(
        # The Trainer keeps this many predictions per validation row; its default (100) fails
        # on small catalogues and full logits would hold rows x movies floats in memory.
        predict_top_k=min(MONITOR_K, vocabulary),
        optim="adamw_torch",
        output_dir=str(run_dir / CHECKPOINTS),
        max_sequence_length=max_length,
        data_loader_engine="merlin",
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        evaluation_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=train.keep_checkpoints,
        logging_strategy="steps",
        logging_steps=steps_per_epoch,
        load_best_model_at_end=True,
        metric_for_best_model=MONITOR_METRIC,
        greater_is_better=True,
        seed=config.seed,
        data_seed=config.seed,
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else [],
        logging_dir=str(run_dir / "tensorboard"),
        dataloader_drop_last=False,
        # Without CUDA, accelerate sets up a multi-process run only when told the CPU is the
        # device; the backend is named so that an MPI-enabled torch does not pick MPI instead.
        no_cuda=default_device() == "cpu",
        ddp_backend=distributed.backend() if distributed.world_size() > 1 else None,
    )


def train(
    config: AppConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[TrainerCallback] | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train the configured model on ``data_dir`` (preprocess output) into ``run_dir``; see the module doc.

    ``init_from``: an earlier RUN_DIR whose weights the model starts from (``model.warm_start``)."""
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir)
    if init_from and Path(init_from).resolve() == run_dir.resolve():
        raise TrainingError(
            f"--init-from {init_from} is the --output run: train the new model into another RUN_DIR, so that a run "
            "that fails or is killed midway leaves the old one whole"
        )
    _check_data(data_dir)
    last_checkpoint = _prepare_run_dir(run_dir, resume)
    main_process = distributed.is_main_process()
    progress = progress and main_process
    schema = item_schema(load_schema(data_dir / "train"))
    max_length = max_sequence_length(schema)
    config, choices = auto_settings.resolve(config, len(movie_ids(vocabulary_size(schema))))
    if main_process:
        for choice in choices:
            print(f"auto: {choice.key}={choice.value} ({choice.why})", flush=True)
        save_config(config, run_dir / CONFIG)
        write_run_info(
            run_dir,
            RunInfo(
                str(data_dir),
                default_device(),
                torch.__version__,
                transformers4rec.__version__,
                transformers.__version__,
                *resolve_exclude_seen(config, data_dir),
                auto_choices=[asdict(choice) for choice in choices],
                parent_run=str(Path(init_from).resolve()) if init_from else "",
            ),
        )
    transformers.set_seed(config.seed)
    histories = training_histories(data_dir, withheld_movies(data_dir, config.train.withhold_movies, config.seed))
    features = build_item_features(config.model, data_dir, vocabulary_size(schema), histories, progress)
    train_loader = training_loader(config, histories, max_length)
    validation = validation_loader(config, data_dir)
    train_sequences = len(train_loader.dataset)
    if distributed.world_size() > 1 and main_process:
        print(distributed.describe(config.train.batch_size, config.train.learning_rate), flush=True)
    steps_per_epoch = len(train_loader)
    first_validation = steps_per_epoch * config.train.eval_every_epochs
    if config.train.max_steps and config.train.max_steps < first_validation:
        raise TrainingError(
            f"train.max_steps={config.train.max_steps} ends before the first validation "
            f"(after {first_validation} steps): raise it or lower train.eval_every_epochs"
        )
    model = build_model(schema, config.model, config.evaluate.top_ks, features)
    if init_from:
        _start_from(model, Path(init_from), config, schema, data_dir, main_process)
    trainer = tr.Trainer(
        model=model,
        args=training_arguments(config, run_dir, max_length, vocabulary_size(schema), steps_per_epoch),
        schema=schema,
        train_dataloader=train_loader,
        eval_dataloader=validation,
        compute_metrics=True,
        callbacks=[
            EarlyStopping(config.train.patience, config.train.min_epochs, config.train.time_budget_s),
            *([TrainingLog(run_dir, model_label(config.model))] if main_process else []),
            MarkCompleteCheckpoints(),
            *(callbacks or []),
        ],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainingProgress(enabled=progress))
    started = time.perf_counter()
    with _checkpoint_rng_loading():
        trainer.train(resume_from_checkpoint=last_checkpoint)
    seconds = time.perf_counter() - started
    first_step = int(last_checkpoint.rsplit("-", 1)[1]) if last_checkpoint else 0
    result = _summarise(trainer.state, run_dir, seconds, train_sequences, steps_per_epoch, config.train.batch_size, first_step)
    result.learned = learned_scalars(trainer.model)
    if main_process:
        save_model(trainer.model, schema, run_dir, data_dir, features_for_saving(config.model, features))
        metrics = run_dir / f".metrics.json.partial-{os.getpid()}"
        metrics.write_text(json.dumps(asdict(result), indent=2, default=str))
        os.replace(metrics, run_dir / "metrics.json")
    distributed.finish()
    return result


def _start_from(model, parent_dir: Path, config: AppConfig, schema, data_dir: Path, main_process: bool) -> None:
    """Load an earlier run's weights into ``model`` (``train --init-from``), after checking they fit."""
    import pandas as pd

    from t4r_app.model.saved_run import ITEM_MAPPING, MODEL_DIR, load_run
    from t4r_app.model.warm_start import check_compatible, check_same_movies, warm_start

    parent = load_run(parent_dir, device="cpu")
    check_compatible(parent.config.model, config.model, parent_dir)
    check_same_movies(pd.read_parquet(parent_dir / MODEL_DIR / ITEM_MAPPING), pd.read_parquet(data_dir / ITEM_MAPPING), parent_dir)
    done = warm_start(model, parent.model.state_dict(), vocabulary_size(parent.schema), vocabulary_size(schema),
                      config.model.title_embeddings)
    if main_process:
        print(f"init-from {parent_dir}: {done['weights']} weights copied, {done['grown_by_item_id']} of them grown by "
              f"{done['new_item_ids']:,} new item ids", flush=True)


def training_loader(config: AppConfig, histories: ItemSequences, max_length: int) -> WindowLoader:
    """This rank's share of every epoch's windows (all of them in a single process)."""
    windows = cut_windows(histories, max_length, config.train.window_stride)
    dataset = WindowDataset(windows, config.train.copies_per_epoch)
    return WindowLoader(
        dataset,
        config.train.batch_size,
        config.seed,
        distributed.rank(),
        distributed.world_size(),
        length_buckets=config.train.length_buckets,
    )


def validation_loader(config: AppConfig, data_dir: Path) -> WindowLoader:
    """The whole validation split in order, on every rank (see train.windows' module doc)."""
    return WindowLoader(WindowDataset(read_split(data_dir, "valid").items), config.train.eval_batch_size, config.seed, shuffle=False)


def _summarise(
    state, run_dir: Path, seconds: float, train_sequences: int, steps_per_epoch: int, batch_size: int, first_step: int
) -> TrainResult:
    evaluations = [entry for entry in state.log_history if MONITOR_METRIC in entry]
    if not evaluations:
        raise TrainingError("training ended before the first validation: raise train.epochs or train.max_steps")
    best = max(evaluations, key=lambda entry: entry[MONITOR_METRIC])
    epochs_run = state.global_step / steps_per_epoch
    steps_now = state.global_step - first_step
    # Every rank takes batch_size windows a step: the whole run trains world_size times as many.
    trained_sequences = min(steps_now * batch_size * distributed.world_size(), steps_now / steps_per_epoch * train_sequences)
    return TrainResult(
        run_dir=run_dir,
        best_epoch=round(best["epoch"], 3),
        best_valid_ndcg=best[MONITOR_METRIC],
        epochs_run=round(epochs_run, 3),
        stopped_early=state.global_step < state.max_steps,
        train_seconds=round(seconds, 2),
        sequences_per_second=round(trained_sequences / seconds, 1) if seconds else 0.0,
        device=default_device(),
    )
