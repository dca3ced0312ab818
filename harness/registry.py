"""Registries for tasks and models.

A task is one file in ``medbench/tasks/`` that registers itself with :func:`register_task` when imported;
:func:`task_registry` imports every module of that package (and any third-party plugin exposed under the
``medbench.tasks`` entry-point group), so adding a file adds a task.

Models are registered by name with a dotted ``module:factory`` path, so listing them imports nothing heavy;
the adapter module (and torch, transformers, ...) is imported only when the model is created.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from medbench.errors import UsageError

if TYPE_CHECKING:
    from medbench.models.base import Model
    from medbench.tasks.base import Task

T = TypeVar("T", bound="type[Task]")

_TASKS: dict[str, type[Task]] = {}
_discovered = False


def register_task(cls: T) -> T:
    """Class decorator: make a :class:`~medbench.tasks.base.Task` subclass available by its ``name``."""
    name = cls.name
    if name in _TASKS and _TASKS[name] is not cls:
        raise ValueError(f"task {name!r} is registered twice ({_TASKS[name].__module__} and {cls.__module__})")
    _TASKS[name] = cls
    return cls


def _discover_tasks() -> None:
    global _discovered
    if _discovered:
        return
    import medbench.tasks as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"medbench.tasks.{info.name}")
    for ep in entry_points(group="medbench.tasks"):
        ep.load()
    _discovered = True


def task_registry() -> dict[str, type[Task]]:
    """All registered tasks, by name, in registration order."""
    _discover_tasks()
    return dict(sorted(_TASKS.items(), key=lambda item: (item[1].order, item[0])))


def get_task(name: str) -> Task:
    """Instantiate the task called ``name``; an unknown name lists the known ones."""
    tasks = task_registry()
    if name not in tasks:
        raise UsageError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))} (see `medbench list tasks`)")
    return tasks[name]()


def resolve_task_names(spec: str) -> list[str]:
    """Expand ``all`` or a comma-separated list into task names, checking each exists."""
    tasks = task_registry()
    names = list(tasks) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UsageError("no task given: use --tasks all or a comma-separated list (see `medbench list tasks`)")
    for name in names:
        if name not in tasks:
            raise UsageError(
                f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))} (see `medbench list tasks`)"
            )
    return names


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``factory`` is ``"module:callable"``, imported only when the model is built.

    ``prefix`` entries (``hf:``, ``openai:``) match any name starting with ``name``.
    """

    name: str
    factory: str
    description: str
    prefix: bool = False


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, factory: str, description: str, *, prefix: bool = False) -> None:
    """Register a model adapter by name without importing it."""
    _MODELS[name] = ModelEntry(name, factory, description, prefix)


_plugins_loaded = False


def model_registry() -> dict[str, ModelEntry]:
    """All registered models: the built-ins (importing only the light registration module) and third-party
    adapters exposed under the ``medbench.models`` entry-point group (``name = "module:factory"``; a name ending
    in ":" is a prefix, like ``hf:``). Plugins are registered by reference, not imported, until used."""
    global _plugins_loaded
    importlib.import_module("medbench.models")
    if not _plugins_loaded:
        for ep in entry_points(group="medbench.models"):
            dist = getattr(ep, "dist", None)
            origin = f"plugin from {dist.name}" if dist is not None else "plugin"
            register_model(ep.name, ep.value, origin, prefix=ep.name.endswith(":"))
        _plugins_loaded = True
    return dict(_MODELS)


def _entry_for(name: str) -> ModelEntry:
    models = model_registry()
    if name in models and not models[name].prefix:
        return models[name]
    for entry in models.values():
        if entry.prefix and name.startswith(entry.name) and len(name) > len(entry.name):
            return entry
    known = ", ".join(sorted(e.name + ("<...>" if e.prefix else "") for e in models.values()))
    raise UsageError(f"unknown model {name!r}; known models: {known} (see `medbench list models`)")


def check_model_name(name: str) -> None:
    """Raise :class:`UsageError` for an unknown model name, without importing anything heavy."""
    _entry_for(name)


def create_model(name: str, **kwargs: Any) -> Model:
    """Import the adapter behind ``name`` and build it."""
    entry = _entry_for(name)
    module_name, _, attr = entry.factory.partition(":")
    factory: Callable[..., Model] = getattr(importlib.import_module(module_name), attr)
    return factory(name, **kwargs)
