"""The contracts every part of medbench shares: Sample, ImageRef and Request.

A task plugin turns dataset files into ``Sample`` objects; the runner turns a Sample into a ``Request`` (never
carrying the gold answer) for a model adapter; scorers see references and predictions but never models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from PIL import Image

AnswerType = Literal["closed", "open"]
TaskKind = Literal["vqa", "caption"]
ImageKind = Literal["file", "zip", "parquet"]

#: Each task kind's generation budget: short answers for VQA, a paragraph for captions. A task may set its own
#: (:attr:`medbench.tasks.base.Task.max_new_tokens`); every Request carries the value it was built with.
MAX_NEW_TOKENS: dict[TaskKind, int] = {"vqa": 32, "caption": 256}

#: The paper resizes every image to 512x512 before training and inference.
DEFAULT_IMAGE_SIZE = 512


@dataclass(frozen=True)
class ImageRef:
    """A lazy reference to one image; nothing is read until :meth:`open` is called.

    ``kind`` says where the bytes live:

    * ``file``: ``path`` is an image file (already checked to lie inside the dataset folder);
    * ``zip``: ``member`` inside the zip archive ``path`` (SLAKE's mirror ships ``imgs.zip``);
    * ``parquet``: cell ``row`` of row group ``row_group`` in column ``member`` of the parquet file ``path``
      (the Hugging Face mirrors embed images as ``{bytes, path}`` structs).
    """

    kind: ImageKind
    path: str
    member: str | None = None
    row_group: int = 0
    row: int = 0

    def describe(self) -> str:
        """A human-readable location for error messages."""
        if self.kind == "file":
            return self.path
        if self.kind == "zip":
            return f"{self.path}!{self.member}"
        return f"{self.path} (row group {self.row_group}, row {self.row}, column {self.member!r})"

    def read_bytes(self) -> bytes:
        """The encoded image bytes. Raises :class:`medbench.errors.SampleError` if they cannot be read."""
        from medbench.images import read_image_bytes

        return read_image_bytes(self)

    def open(self, size: int | None = DEFAULT_IMAGE_SIZE) -> Image.Image:
        """Decode to an RGB PIL image, resized to ``size`` x ``size`` (``None`` or 0 keeps the original)."""
        from medbench.images import open_image

        return open_image(self, size)


@dataclass(frozen=True)
class Sample:
    """One evaluation item, the same shape for every task.

    ``id`` is stable and dataset-native (SLAKE/VQA-RAD ``qid``, ROCOv2 ``ID``; a content hash where the source
    has none). ``answer_type`` is ``"closed"``/``"open"`` under the run's closed/open rule, ``None`` for
    captioning. ``metadata`` holds modality, organ/location, question type, source, split and the dataset's own
    ``answer_type`` label when it has one.
    """

    id: str
    task: str
    image: ImageRef
    question: str | None
    reference: str
    answer_type: AnswerType | None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What a model adapter receives for one sample: the prompt and the image, never the gold answer."""

    sample_id: str
    task: str
    kind: TaskKind
    prompt: str
    question: str | None
    image: ImageRef
    image_size: int | None = DEFAULT_IMAGE_SIZE
    max_new_tokens: int = 32
