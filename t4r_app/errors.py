"""Every error that describes a problem with the user's input or files: the CLI prints these without a
traceback. One module, importing nothing, so each stage raises them without loading the others."""


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


class InputError(ValueError):
    """The input path does not hold a usable dataset; the message says what was found."""


class BadRecordError(ValueError):
    """A record broke the input contract and the policy is 'fail'."""


class TitleError(ValueError):
    """A title matched no movie or several; the message lists the candidates."""


class PreprocessError(RuntimeError):
    """The input was readable but left nothing to build sequences from."""


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


USER_ERRORS = (
    InputError, BadRecordError, PreprocessError, TrainingError, RunError, PredictInputError, SessionError, TitleError,
    ExportError, ServeError, ServerError, DataImportError,
)
