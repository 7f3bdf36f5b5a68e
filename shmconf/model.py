"""How shmconf uses an application's pydantic model: validate, publish, read back.

The publisher validates the merged sources with the model and publishes the
**validated data** (defaults included), in a form that validates back into
an equal instance in every worker. Three things make that hold:

* **One class on both sides.** :func:`snapshot_model` derives, once per model
  class, a subclass with the same name that is frozen (a snapshot refuses
  attribute assignment, nested models included) and accepts field names as
  well as aliases. Both the publisher and the readers validate with it, so
  their instances compare equal, and ``isinstance(cfg, Settings)`` holds.
* **Published by field name, secrets included.** :func:`published_data`
  dumps by field name (serialization aliases are keys validation ignores)
  with ``SecretStr``/``SecretBytes`` revealed (JSON mode would publish
  ``**********``); secret paths are therefore field-name paths too.
* **The environment is read once, by the publisher.** For a
  pydantic-settings ``BaseSettings``, the derived class reads the model's
  own sources (environment, ``.env``, secrets directory, in the model's own
  order, with its prefix, delimiter and case rules) only inside
  :func:`apply_environment`, where the publisher validates; there the files'
  data ranks below every other source, as a base. Everywhere else it reads
  only the data it is given: ``Settings.model_validate(data)`` alone would
  read each worker's environment.

A model import string (``pkg.module:Class``) is resolved by :func:`import_model`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import operator
import os
import sys
import threading
import types
import typing
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Final

from shmconf import _gc

#: True while the publisher validates: a BaseSettings reads its own sources then.
_APPLYING_ENVIRONMENT: ContextVar[bool] = ContextVar("shmconf_apply_environment", default=False)
#: Marks the classes made here, so that deriving is idempotent.
_DERIVED: Final = "__shmconf_snapshot_model__"


def import_model(spec: str) -> type[Any]:
    """Import ``pkg.mod:Class``; the current directory is importable, as in gunicorn."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a model import string looks like 'pkg.module:Class', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise ImportError(f"cannot import model {spec!r}: {exc}") from exc
    if not hasattr(obj, "model_validate"):
        raise TypeError(f"model {spec!r} is not a pydantic model class")
    return obj  # type: ignore[no-any-return]


def is_settings(model: type[Any]) -> bool:
    """Whether ``model`` is a pydantic-settings ``BaseSettings`` (without importing it)."""
    return any(c.__name__ == "BaseSettings" and c.__module__.startswith("pydantic_settings")
               for c in model.__mro__)


@contextlib.contextmanager
def apply_environment() -> Iterator[None]:
    """Inside, a BaseSettings snapshot model reads its own sources (the publisher only)."""
    token = _APPLYING_ENVIRONMENT.set(True)
    try:
        yield
    finally:
        _APPLYING_ENVIRONMENT.reset(token)


#: Derived once per model class (the derivation builds pydantic validators).
_SNAPSHOT_MODELS: dict[type[Any], type[Any]] = {}
#: Models being derived now, on this thread (a recursive model meets itself).
_DERIVING: set[type[Any]] = set()
_DERIVING_LOCK: Final = threading.RLock()
#: True while a snapshot is being validated: validators may assign fields then.
_VALIDATING: ContextVar[bool] = ContextVar("shmconf_validating", default=False)


def snapshot_model(model: type[Any]) -> type[Any]:
    """The class shmconf validates ``model``'s snapshots with (see the module docstring).

    A subclass of ``model`` with its name: frozen, validated by field name or
    alias, its nested model classes replaced by their own snapshot models,
    and, for a ``BaseSettings``, reading its sources only in
    :func:`apply_environment`.
    """
    found = _SNAPSHOT_MODELS.get(model)
    if found is not None:
        return found
    with _DERIVING_LOCK:  # one class per model, also when two threads ask at once
        found = _SNAPSHOT_MODELS.get(model)
        if found is None:
            if model in _DERIVING:
                # A recursive model (Node with children: list[Node]): the inner
                # references keep the application's class (see docs/settings.md).
                return model
            _DERIVING.add(model)
            try:
                found = _SNAPSHOT_MODELS[model] = _derive(model)
            finally:
                _DERIVING.discard(model)
    return found


def _derive(model: type[Any]) -> type[Any]:
    from pydantic import BaseModel, ConfigDict, create_model

    if model.__dict__.get(_DERIVED, False):
        return model
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"model must be a pydantic model class, got {model!r}")
    # Not pydantic's frozen=True: a model validator (mode="after") or
    # model_post_init may assign fields while the snapshot is validated;
    # afterwards _refuse_setattr refuses, as frozen would. Workers validate
    # the published JSON once per generation, where pydantic's cache of
    # parsed strings is slower (about 20 % at 1 MB, docs/bench.md); it is off
    # unless the model sets cache_strings (the cache shares repeated string
    # values, which saves memory in a config that repeats many).
    config = ConfigDict(**{"cache_strings": False, **model.model_config, "frozen": False,
                           "validate_by_name": True, "validate_by_alias": True,
                           "from_attributes": True})
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = _snapshot_annotation(info.annotation)
        if annotation is not info.annotation:
            # A default model instance is of the application's class: validated
            # (from its attributes), it becomes a frozen snapshot one too.
            info = copy.copy(info)  # noqa: PLW2901 - the field's copy replaces it
            info.validate_default = True
            if isinstance(info.default, BaseModel):
                # As plain data, so that validation builds the snapshot class.
                info.default = info.default.model_dump(round_trip=True)
            fields[name] = (annotation, info)
    namespace: dict[str, Any] = {_DERIVED: True, "model_config": config,
                                 "__module__": model.__module__,
                                 "__qualname__": model.__qualname__,
                                 "__eq__": _snapshot_eq, "__hash__": _snapshot_hash,
                                 "__setattr__": _refuse_setattr,
                                 "__delattr__": _refuse_delattr}
    if is_settings(model):
        namespace["settings_customise_sources"] = classmethod(_settings_sources)
        namespace["__init__"] = _settings_init
    base = types.new_class(model.__name__, (model,), {},
                           lambda ns: ns.update(namespace))
    if not fields:
        return base
    derived: type[Any] = create_model(model.__name__, __base__=base, __module__=model.__module__,
                           **fields)
    derived.__qualname__ = model.__qualname__
    setattr(derived, _DERIVED, True)
    return derived


def _snapshot_eq(self: Any, other: object) -> Any:  # bool, or NotImplemented
    """Equal to an instance of the application's own model with the same values.

    pydantic's ``==`` wants the very same class; a snapshot is of a subclass
    (see :func:`snapshot_model`). As a subclass, its ``__eq__`` runs first on
    either side of ``==``.
    """
    if type(other) is not type(self):  # the common case, two snapshots, skips this
        from pydantic import BaseModel

        if not isinstance(other, BaseModel):
            return NotImplemented
        if snapshot_model(type(other)) is not snapshot_model(type(self)):
            return False
    model: Any = other
    same: bool = (self.__dict__ == model.__dict__
                  and self.__pydantic_private__ == model.__pydantic_private__
                  and self.__pydantic_extra__ == model.__pydantic_extra__)
    return same


def _snapshot_hash(self: Any) -> int:
    """Hashable when its values are, and as pydantic hashes a frozen model of the same fields."""
    keys = tuple(type(self).__pydantic_fields__)
    return hash(operator.itemgetter(*keys)(self.__dict__) if keys else ())


def _refuse_setattr(self: Any, name: str, value: Any) -> None:
    """A snapshot serves every request of its process: no assignment after validation."""
    if _VALIDATING.get():
        _own_class(self).__setattr__(self, name, value)
        return
    from pydantic import ValidationError

    raise ValidationError.from_exception_data(type(self).__name__, [
        {"type": "frozen_instance", "loc": (name,), "input": value}])


def _own_class(instance: Any) -> Any:
    """The application's class of a snapshot: the first one up the MRO not made here."""
    return next(k for k in type(instance).__mro__ if not k.__dict__.get(_DERIVED, False))


def _refuse_delattr(self: Any, name: str) -> None:
    raise AttributeError(f"a config snapshot is read-only: cannot delete {name!r}")


def _settings_init(self: Any, **values: Any) -> None:
    """A BaseSettings snapshot's ``__init__``: its sources in the publisher, else only ``values``.

    Outside :func:`apply_environment` it skips pydantic-settings entirely, so
    a worker reads no environment, ``.env`` file, secrets directory or
    command line, not even to build a source it would not use.
    """
    from pydantic import BaseModel

    if _APPLYING_ENVIRONMENT.get():
        _own_class(self).__init__(self, **values)  # the application's BaseSettings
    else:
        BaseModel.__init__(self, **values)


def validate(model: type[Any], data: Any, *, by_name: bool = False) -> Any:
    """Validate ``data`` (parsed, or JSON bytes) with a snapshot class.

    Validators may assign fields meanwhile (see :func:`_refuse_setattr`).
    Published data is keyed by field name; ``by_name`` reads it by name only,
    so that a field whose name is another field's alias cannot swap values.
    """
    names = {"by_alias": False, "by_name": True} if by_name else {}
    token = _VALIDATING.set(True)  # not a contextmanager: this is a worker's read path
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data, **names)
        return model.model_validate(data, **names)
    finally:
        _VALIDATING.reset(token)


def _snapshot_annotation(annotation: Any) -> Any:
    """``annotation`` with every model class in it replaced by its snapshot model."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return snapshot_model(annotation)
    args = typing.get_args(annotation)
    new_args = tuple(_snapshot_annotation(a) for a in args)
    if all(n is a for n, a in zip(new_args, args, strict=True)):
        return annotation  # no model inside (or no arguments at all)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        rebuilt: Any = typing.Annotated.__class_getitem__(
            (new_args[0], *annotation.__metadata__))
    elif origin in (typing.Union, types.UnionType):
        rebuilt = typing.Union[new_args]  # noqa: UP007 - built from a tuple of args
    elif hasattr(annotation, "copy_with"):  # typing.List[X] and friends
        rebuilt = annotation.copy_with(new_args)
    else:
        rebuilt = origin[new_args]
    return rebuilt


def _settings_sources(  # noqa: PLR0917 - the signature pydantic-settings calls
        cls: type[Any], settings_cls: type[Any], init_settings: Any, env_settings: Any,
        dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
    """A BaseSettings snapshot model's sources, in the publisher (see :func:`_settings_init`).

    The model's own order (its ``settings_customise_sources``) is kept, but
    the published files (the init data) go last: they are the base that the
    environment, ``.env`` and the secrets directory override.
    """
    # The application's own order: the first definition up the MRO not made here.
    own = next(k.__dict__["settings_customise_sources"].__func__ for k in settings_cls.__mro__
               if "settings_customise_sources" in k.__dict__
               and k.__dict__["settings_customise_sources"].__func__ is not _settings_sources)
    ordered = own(settings_cls, settings_cls, init_settings, env_settings, dotenv_settings,
                  file_secret_settings)
    return (*(s for s in ordered if s is not init_settings), init_settings)


def published_data(instance: Any) -> dict[str, Any]:
    """The validated data of ``instance`` as plain JSON data that validates back into it.

    Keyed by field name (validation accepts names: see :func:`snapshot_model`),
    defaults included, secrets revealed: the segment is as private as the
    files it came from, and workers need the real values. pydantic's JSON
    mode writes every value (and masks secrets, which are then put back at
    the paths :func:`shmconf.content.secret_paths` finds).
    """
    from shmconf.content import secret_paths

    with _gc.paused():  # a container per value, no cycles (see shmconf._gc)
        data: dict[str, Any] = instance.model_dump(mode="json", by_alias=False,
                                                   round_trip=True)
    for path in secret_paths(instance):
        _reveal_at(instance, data, path.split("."))
    return data


def _reveal_at(instance: Any, data: Any, parts: list[str]) -> None:
    """Put the secret at ``parts`` of ``instance`` in place of its mask in ``data``."""
    value: Any = instance
    node: Any = data
    key: int | str
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if isinstance(value, (list, tuple)):
            value, key = value[int(part)], int(part)
        elif isinstance(value, Mapping):
            value, key = value[part], part
        else:
            value, key = getattr(value, part), part
        if last:
            secret = value.get_secret_value()
            node[key] = secret.decode("utf-8") if isinstance(secret, bytes) else secret
        else:
            node = node[key]


def round_trip_problems(model: type[Any], instance: Any, data: Mapping[str, Any],
                        payload: bytes) -> list[str]:
    """Why workers would not read ``payload`` back as ``instance``; empty when they would.

    Workers validate the published JSON again. A validator that is not
    idempotent, a field serializer or ``exclude``, a non-finite float (JSON
    has none) or strict types would give them other values, or an error: the
    publisher (and ``shmconf validate``) check it once, so that no worker
    ever meets it.
    """
    from shmconf.content import changed_paths
    from shmconf.errors import validation_problems

    why = ("a worker would read another value than the publisher validated (a validator "
           "that is not idempotent, a field serializer or exclude, NaN or Infinity, strict "
           "types?)")
    try:
        # As a worker parses and validates it (NaN is null in JSON), with the
        # collector paused as the reader pauses it (shmconf._gc).
        with _gc.paused():
            back = validate(model, payload, by_name=True)
    except ValueError as exc:
        return [f"{p} (in the published form: {why})" for p in validation_problems(exc)]
    except Exception as exc:  # a validator that raised something else
        return [f"(root): the model raised {type(exc).__name__} on the published form ({why})"]
    with _gc.paused():
        same = back == instance
    if same:
        return []
    paths = _differing_fields(instance, back) or changed_paths(data, published_data(back)) \
        or ["(root)"]
    return [f"{path}: {why}" for path in paths[:5]]


def _differing_fields(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted paths of the fields whose values differ between two instances of a model."""
    fields = getattr(type(a), "model_fields", None)
    if not isinstance(fields, Mapping) or type(a) is not type(b):
        return [path or "(root)"] if a != b else []
    found: list[str] = []
    for name in fields:
        left, right = getattr(a, name, None), getattr(b, name, None)
        if left != right:
            found += _differing_fields(left, right, f"{path}.{name}" if path else name)
    return found
