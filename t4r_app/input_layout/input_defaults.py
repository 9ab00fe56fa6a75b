"""Defaults of the commands that write the input layout (``generate``, ``import``), each written once.

The command-line options (``arguments.py``, which must stay light to import) and the writers
(``synthetic.py``, ``importers.py``) both read them from here; this module imports nothing.
"""

SHARDS = 4  # TFRecord shards a writer spreads the records over
MEAN_INTERACTIONS = 40.0  # generate: interactions per user, on average
SESSION_GAP_S = 3600  # import: a gap longer than this starts a new session
