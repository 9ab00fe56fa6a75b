"""The NVTabular ETL: interaction rows in, per-user (or per-session) item sequences out, then
the train/valid/test examples of the chosen split rule."""
