"""Errors that describe a problem with the user's input: the CLI prints them without a traceback."""

from t4r_app.records import BadRecordError
from t4r_app.sources import InputError


class PreprocessError(RuntimeError):
    """The input was readable but left nothing to build sequences from."""


USER_ERRORS = (InputError, BadRecordError, PreprocessError)
