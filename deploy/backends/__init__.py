"""Device backends: one module each, registered in :data:`deploy.backends.base.DEVICE_BACKENDS`.

Adding a runtime: write ``deploy/backends/<name>.py`` that calls :func:`register` with a
:class:`DeviceBackend`, import it below, and give it a host half in ``edgedistill.backends``.
"""

from deploy.backends.base import (  # noqa: F401 - the package's API
    DEVICE_BACKENDS,
    PRECISIONS,
    DeviceBackend,
    RunOptions,
    Runner,
    backend_names,
    get_backend,
    install_hint,
    open_runner,
    register,
)
from deploy.backends import onnxruntime_cpu, tvm_vm, tensorrt_engine  # noqa: F401,E402 - registrations
