"""Configuration as data: dataclasses <-> JSON dicts, unknown keys refused, presets merged with overrides.

Every configuration object of kidneyseg (the preprocessing :class:`~kidneyseg.preprocess.plan.Plan`,
the training :class:`~kidneyseg.train.config.TrainConfig` with its nested network, loss, optimizer,
augmentation and sampler settings, the post-processing choice, phantom options) is a dataclass,
read through :func:`from_dict` and written through :func:`to_dict`. There is one parser, so every
misspelt key gets the same one-line error naming where it was found and the valid keys, and one
merge rule (:func:`merge`) for "a preset plus a user's overrides".

>>> from dataclasses import dataclass
>>> @dataclass
... class Box:
...     name: str = "a"
...     size: int = 2
>>> from_dict(Box, {"size": 5})
Box(name='a', size=5)
>>> from_dict(Box, {"nmae": "b"}, "my.json")
Traceback (most recent call last):
...
kidneyseg.errors.KidneysegError: my.json: unknown key 'nmae'; valid keys: name, size
>>> merge({"epochs": 3, "network": {"depth": 4, "width": 8}}, {"network": {"width": 16}})
{'epochs': 3, 'network': {'depth': 4, 'width': 16}}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

from .errors import KidneysegError, fail

__all__ = ["from_dict", "merge", "to_dict", "valid_keys"]

T = TypeVar("T")


def valid_keys(cls) -> list[str]:
    """The field names of dataclass ``cls``, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def _dataclass_in(hint) -> type | None:
    """The dataclass a field's type hint names (``X``, ``X | None``, ``Optional[X]``), else ``None``."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def from_dict(cls: type[T], data: Any, where: str | Any = "config") -> T:
    """Build dataclass ``cls`` from a JSON-style dict, recursively for nested dataclass fields.

    Missing keys take the field defaults. An unknown key raises a :class:`KidneysegError`
    ``"<where>: unknown key 'x'; valid keys: ..."``; a value the dataclass rejects (its
    ``__post_init__`` raises ``ValueError``/``TypeError``) raises one naming ``where``. Nested
    fields are reported as ``where.field``. A nested field typed ``X | None`` accepts ``null``.

    Args:
        cls: the dataclass.
        data: a dict (what ``json.load`` gives).
        where: what the message names: a file path or a dotted location.
    """
    where = str(where)
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise fail(where, f"expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = valid_keys(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise fail(where, f"unknown key {key!r}; valid keys: {', '.join(names)}")
        sub = _dataclass_in(hints[key])
        if sub is not None and value is not None and not isinstance(value, sub):
            value = from_dict(sub, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, KidneysegError):
            raise
        raise fail(where, str(exc)) from None


def to_dict(obj) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass instance (nested dataclasses too; tuples become lists)."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str = "overrides") -> dict[str, Any]:
    """``base`` with ``overrides`` applied; nested dicts are merged key by key, other values replaced.

    An override key that ``base`` does not have raises a :class:`KidneysegError` listing the valid
    keys at that level (a misspelt override never passes silently). A ``None`` in ``base`` (e.g.
    augmentation switched off) is replaced by the override as a whole.

    Args:
        base: e.g. ``to_dict(preset)``.
        overrides: the user's partial dict (``None`` or ``{}``: nothing changes).
        where: what the message names.
    """
    out = dict(base)
    for key, value in (overrides or {}).items():
        if key not in out:
            raise fail(where, f"unknown key {key!r}; valid keys: {', '.join(out)}")
        if isinstance(value, Mapping) and isinstance(out[key], Mapping):
            out[key] = merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out
