"""generate -> preprocess -> train -> evaluate as one function that reads top to bottom.

Each stage stays its own function with its own subcommand; this is the one place they are
chained, for ``t4r-app pipeline`` (``make demo``), the test fixtures and the benchmarks, so
that they all run the same steps in the same order with the same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from t4r_app.config import AppConfig
from t4r_app.data.preprocess import PreprocessResult, preprocess
from t4r_app.input_layout.synthetic import GenerationSpec, GenerationSummary, generate_dataset
from t4r_app.evaluate.protocol import evaluate_run
from t4r_app.evaluate.results import EvaluationResults
from t4r_app.train.trainer import TrainResult, train


@dataclass(frozen=True)
class PipelineResult:
    """Where each stage wrote, and what it returned (None for a stage that did not run)."""

    input_path: Path  # what preprocess read
    data_dir: Path
    run_dir: Path | None
    generation: GenerationSummary | None
    preprocessing: PreprocessResult
    training: TrainResult | None
    evaluation: EvaluationResults | None


def run_pipeline(
    config: AppConfig,
    input_path: str | Path,
    data_dir: str | Path,
    run_dir: str | Path | None,
    *,
    generate: GenerationSpec | None = None,
    make_zip: bool = False,
    titles_path: str | None = None,
    evaluate: bool = True,
    progress: bool = True,
    callbacks: list[TrainerCallback] | None = None,
    on_stage: Callable[[str, object], None] = lambda stage, result: None,
) -> PipelineResult:
    """Run the offline stages on ``input_path`` with one ``config``.

    ``generate``: first write a synthetic dataset into the folder ``input_path`` (and its
    ``recommandation.zip`` with ``make_zip``). ``run_dir=None`` stops once the data is
    prepared. ``train`` refuses a ``run_dir`` that already holds a run: removing an old one
    is left to the caller, who knows it may be deleted. ``callbacks`` go to T4R's Trainer;
    ``on_stage(name, result)`` hears of each stage as it finishes (the CLI prints there).
    """
    input_path, data_dir = Path(input_path), Path(data_dir)

    generation = None
    if generate is not None:
        generation = generate_dataset(generate, input_path, make_zip=make_zip)
        on_stage("generate", generation)
        # Read what a user would be handed: the zip when one was written.
        if generation.zip:
            input_path = Path(generation.zip)

    preprocessing = preprocess(config, str(input_path), data_dir, titles_path=titles_path)
    on_stage("preprocess", preprocessing)
    if run_dir is None:
        return PipelineResult(input_path, data_dir, None, generation, preprocessing, None, None)

    run_dir = Path(run_dir)
    training = train(config, data_dir, run_dir, progress=progress, callbacks=callbacks)
    on_stage("train", training)

    evaluation = evaluate_run(run_dir, progress=progress) if evaluate else None
    if evaluation is not None:
        on_stage("evaluate", evaluation)
    return PipelineResult(input_path, data_dir, run_dir, generation, preprocessing, training, evaluation)
