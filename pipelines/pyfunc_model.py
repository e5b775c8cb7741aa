"""Where MLflow finds the loader of a version registered before the packages were split (``loader_module:
pipelines.pyfunc_model`` in its ``MLmodel``). New versions name ``pipelines.registry.pyfunc_model``; this
module keeps the old ones loadable and holds nothing else."""

from .registry.pyfunc_model import _load_pyfunc  # noqa: F401 (MLflow calls <loader_module>._load_pyfunc)
