"""medbench: a benchmark and evaluation harness for medical multimodal LLMs.

The package root is the repository's ``harness/`` folder; ``tasks/``, ``judges/``, ``reports/`` and
``training/`` install as ``medbench.tasks``, ``medbench.judges``, ``medbench.reports`` and
``medbench.training``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from medbench.errors import DataError, MedbenchError, SampleError
from medbench.schema import ImageRef, Request, Sample

__all__ = ["DataError", "ImageRef", "MedbenchError", "Request", "Sample", "SampleError", "__version__"]
