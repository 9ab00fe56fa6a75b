"""The model Triton runs for the ensemble: merlin's executor, with each request checked first.

merlin-systems 23.08 converts a request before it looks for errors, so a request whose
offsets do not fit its values fails with an empty message. Checking first turns that into
an error that says what is wrong. Importable only inside Triton's python backend.
"""

import triton_python_backend_utils as pb_utils
from merlin.systems.triton.models.executor_model import TritonPythonModel as MerlinExecutorModel
from merlin.systems.triton.utils import triton_error_handling, triton_multi_request

from t4r_app.serving_ops import OFFSETS_INPUT, VALUES_INPUT, request_problem


class TritonPythonModel(MerlinExecutorModel):
    @triton_multi_request
    @triton_error_handling
    def execute(self, request):
        values = pb_utils.get_input_tensor_by_name(request, VALUES_INPUT)
        offsets = pb_utils.get_input_tensor_by_name(request, OFFSETS_INPUT)
        problem = request_problem(
            None if values is None else values.as_numpy(), None if offsets is None else offsets.as_numpy()
        )
        if problem:
            raise ValueError(problem)
        return super().execute(request)
