"""Finding movies by title for `t4r-app recommend --titles`.

The rule, in order: an exact title; else the same title ignoring case; else the one title
that contains the text, ignoring case. Anything else is an error that lists candidates.
"""

from __future__ import annotations

import difflib

from t4r_app.errors import TitleError

MAX_CANDIDATES = 8


def find_movie(text: str, title_of_movie: dict[int, str]) -> int:
    exact = [movie for movie, title in title_of_movie.items() if title == text]
    if len(exact) == 1:
        return exact[0]
    folded = text.casefold()
    same = [movie for movie, title in title_of_movie.items() if title.casefold() == folded]
    if len(same) == 1:
        return same[0]
    containing = same or [movie for movie, title in title_of_movie.items() if folded in title.casefold()]
    if len(containing) == 1:
        return containing[0]
    if containing:
        listed = "; ".join(f"{title_of_movie[m]} (movie {m})" for m in sorted(containing)[:MAX_CANDIDATES])
        more = f" and {len(containing) - MAX_CANDIDATES} more" if len(containing) > MAX_CANDIDATES else ""
        raise TitleError(f"'{text}' matches {len(containing)} movies: {listed}{more}. Give the full title or the movie id")
    close = difflib.get_close_matches(text, list(title_of_movie.values()), n=5, cutoff=0.5)
    hint = f"; did you mean: {'; '.join(close)}?" if close else ""
    raise TitleError(f"no movie titled '{text}'{hint}")
