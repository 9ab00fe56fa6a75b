"""Column names and reserved item ids shared by every stage. Light on purpose: numpy only,
so a client that only talks to a server can use them without NVTabular or torch."""

from __future__ import annotations

import numpy as np

# Interaction rows, as the record reader writes them.
RAW_MOVIE = "movie_index"
USER = "user_index"
SESSION = "session_index"
TIMESTAMP = "timestamp"
EVENT_ORDER = "event_order"  # position in reading order: breaks timestamp ties
INTERACTION_COLUMNS = (USER, SESSION, RAW_MOVIE, TIMESTAMP, EVENT_ORDER)

# The list columns of the sequences the model reads.
ITEM_LIST = "item_id-list"
TIME_LIST = "timestamp-list"

# Categorify's fixed ids (nvtabular/ops/categorify.py, 23.08): 0 pads, 1 is null, 2 is
# out-of-vocabulary, so movies start at 3 (most watched first). CleanSequences' schema then
# reserves the id after the last movie for [MASK].
PADDING_ID, NULL_ID, OOV_ID, FIRST_MOVIE_ID = 0, 1, 2, 3

# The score of an item that must not be ranked (a reserved id, or a movie left out): evaluation
# and serving both mask with it, so neither can rank such an item above a real one.
EXCLUDED = -np.inf


def movie_ids(vocabulary: int) -> np.ndarray:
    """Ids that are real movies: after padding/null/OOV and before the reserved [MASK] id."""
    return np.arange(FIRST_MOVIE_ID, vocabulary - 1)
