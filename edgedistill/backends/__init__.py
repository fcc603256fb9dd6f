"""Host backends, one registered entry each (see :mod:`edgedistill.backends.base`); their device
halves are :mod:`deploy.backends`."""

from edgedistill.backends.base import (  # noqa: F401 - the package's API
    HOST_BACKENDS,
    BuildContext,
    CompileJob,
    FormCandidates,
    FormTimer,
    HostBackend,
    LocalArtifact,
    backend_names,
    get_backend,
    option_flag,
    register,
    timing_backend,
)
from edgedistill.backends import onnxruntime, tensorrt, tvm  # noqa: F401,E402 - registrations
