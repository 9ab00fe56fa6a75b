"""Errors that describe a problem with the user's input: the CLI prints them without a traceback."""

from t4r_app.preprocess import PreprocessError
from t4r_app.records import BadRecordError
from t4r_app.sources import InputError

USER_ERRORS = (InputError, BadRecordError, PreprocessError)
