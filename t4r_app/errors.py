"""Errors that describe a problem with the user's input: the CLI prints them without a traceback."""

from t4r_app.data.records import BadRecordError
from t4r_app.data.sources import InputError
from t4r_app.serve.titles import TitleError


class PreprocessError(RuntimeError):
    """The input was readable but left nothing to build sequences from."""


USER_ERRORS = (InputError, BadRecordError, PreprocessError)


class TrainingError(RuntimeError):
    """A training run cannot start or continue (missing data, an existing run, no checkpoint)."""


class RunError(RuntimeError):
    """A run directory is missing something that evaluate, predict or tune needs."""


class PredictInputError(ValueError):
    """A sessions file for ``predict`` cannot be read; the message names the file and line."""


class SessionError(ValueError):
    """A session given on the command line cannot be answered (empty, or no known movie)."""


class ExportError(RuntimeError):
    """A run cannot be exported as asked."""


class ServeError(RuntimeError):
    """tritonserver cannot start or did not become ready; the message says why."""


class ServerError(RuntimeError):
    """A Triton server could not be reached or refused a request; the message says which."""


class DataImportError(ValueError):
    """A public interaction log cannot be imported or fetched; the message names the file (and line)."""


USER_ERRORS = USER_ERRORS + (
    TrainingError, RunError, PredictInputError, SessionError, TitleError, ExportError, ServeError, ServerError,
    DataImportError,
)
