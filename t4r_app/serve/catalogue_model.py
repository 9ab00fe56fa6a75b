"""The served movie catalogue: a python-backend model that answers every movie id and title.

Export writes it beside the ensemble (``movie_catalogue``), with the catalogue as a file of its
own (``1/movies.json``) rather than inside a config: a client that has only the server's
address asks it once for the ids a session may hold and their titles. Importable only inside
Triton's python backend; light on purpose (json and numpy).
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from t4r_app.serve.contract import CATALOGUE_FILE, CATALOGUE_MOVIES, CATALOGUE_TITLES


class TritonPythonModel:
    def initialize(self, args):
        model_dir = Path(args["model_repository"])
        if model_dir.suffix == ".py":  # some tritonserver versions pass the path of model.py
            model_dir = model_dir.parent.parent
        version = model_dir / str(args["model_version"])
        catalogue = json.loads((version / CATALOGUE_FILE).read_text(encoding="utf-8"))
        self.movies = np.array(catalogue["movie_ids"], dtype=np.int64)
        self.titles = np.array([title.encode("utf-8") for title in catalogue["titles"]], dtype=np.object_)

    def execute(self, requests):
        outputs = [pb_utils.Tensor(CATALOGUE_MOVIES, self.movies), pb_utils.Tensor(CATALOGUE_TITLES, self.titles)]
        return [pb_utils.InferenceResponse(output_tensors=outputs) for _ in requests]
