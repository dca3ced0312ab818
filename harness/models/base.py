"""The model-adapter contract."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from medbench.schema import Request, Sample


class Model(ABC):
    """A model adapter: ``generate`` maps a batch of requests to raw output strings, in order.

    ``cacheable`` adapters have their outputs stored in the prediction cache, keyed by :meth:`fingerprint`.
    ``needs_training_data`` adapters (the blind baselines) get each task's training split through :meth:`fit`
    before generating; they never see the evaluated split's answers. ``uses_images`` tells the runner whether
    images have to be decoded for this model.

    Creating an adapter should be cheap and check its configuration (so a run can create every model before any
    data is loaded and stop at once on a bad one); heavy state is loaded on first use and freed by :meth:`release`.
    """

    needs_training_data: ClassVar[bool] = False
    uses_images: ClassVar[bool] = True
    #: Outputs go through the prediction cache (blind baselines are instant and skip it).
    cacheable: ClassVar[bool] = True
    batch_size: int = 8
    #: Tokens generated so far, for adapters that can count them (None: this adapter cannot). The runner reports
    #: new tokens/s from the change around its generate calls.
    new_tokens: int | None = None
    #: The runner may call :meth:`generate` for the next batch while the current one is still running (from two
    #: threads; :meth:`cancel` stops the one left when the other fails). For adapters that queue every call's
    #: requests in one bounded pool (``openai:``): the next batch fills the slots as the current one's last requests
    #: finish, so the pool stays full across batches; each batch is still committed as soon as it is done.
    overlaps_batches: ClassVar[bool] = False

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.options = options

    def fit(self, task: str, train: Sequence[Sample]) -> None:  # noqa: B027 - optional hook
        """Learn from a task's training split (only adapters with ``needs_training_data``)."""

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[str]:
        """Raw outputs for ``requests``, one string each, in order."""

    def order(self, requests: Sequence[Request]) -> list[int]:
        """The indices of ``requests`` in the order to batch them: by prompt length (batches pad little), stable.
        Adapters that batch better otherwise (the ``hf:`` fast path: an image's questions together) override it."""
        return sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt), i))

    def cancel(self) -> None:  # noqa: B027 - optional hook
        """Make :meth:`generate` calls running in other threads stop soon (raising); only asked of adapters that
        :attr:`overlaps_batches`. No-op by default."""

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load heavy state (weights) now rather than in the first :meth:`generate`; no-op by default."""

    def release(self) -> None:  # noqa: B027 - optional hook
        """Free what :meth:`generate` loaded (weights, GPU memory) once this model's work is done; a later
        ``generate`` loads it again. Adapters that hold nothing heavy keep this no-op."""

    def describe(self) -> dict[str, Any]:
        """What identifies this model's outputs (weights, adapter, dtype, generation config)."""
        return {"name": self.name, "class": type(self).__qualname__, "options": self.options}

    def fingerprint(self) -> str:
        """A hash of :meth:`describe`: two runs with equal fingerprints produce the same outputs."""
        blob = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
