"""medbench: a benchmark and evaluation harness for medical multimodal LLMs.

The package root is the repository's ``harness/`` folder; ``tasks/``, ``judges/``, ``reports/`` and
``training/`` install as ``medbench.tasks``, ``medbench.judges``, ``medbench.reports`` and
``medbench.training``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from medbench.errors import DataError, MedbenchError, SampleError
from medbench.schema import ImageRef, Request, Sample

if TYPE_CHECKING:
    from medbench.api import evaluate
    from medbench.results import load_run

__all__ = [
    "DataError",
    "ImageRef",
    "MedbenchError",
    "Request",
    "Sample",
    "SampleError",
    "__version__",
    "evaluate",
    "load_run",
]


def __getattr__(name: str) -> Any:
    # The API is imported on first use, so `import medbench` stays light (no runner, scoring or numpy).
    if name == "evaluate":
        from medbench.api import evaluate

        return evaluate
    if name == "load_run":
        from medbench.results import load_run

        return load_run
    raise AttributeError(f"module 'medbench' has no attribute {name!r}")
