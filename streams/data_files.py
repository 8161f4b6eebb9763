"""The data files the rules read (chart of accounts, refund policy, fee schedule, denial
routing): YAML, size-bounded, checked by their pydantic model; one loader for all of them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rcmflow.runtime.exceptions import RcmflowError

__all__ = ["load_data_file"]

Model = TypeVar("Model", bound=BaseModel)
#: The shipped files, read once per process (they cannot change while it runs).
_SHIPPED: dict[tuple[type[BaseModel], str], Any] = {}


def load_data_file(model: type[Model], path: Path | None, *, shipped: str, what: str,
                   error: type[RcmflowError], bytes_max: int = 1_000_000) -> Model:
    """The file at ``path`` (``None``: the one shipped beside this module, named
    ``shipped``) as a ``model``; ``error`` with what is wrong, naming the file as ``what``."""
    if path is None and (model, shipped) in _SHIPPED:
        return _SHIPPED[(model, shipped)]  # type: ignore[no-any-return]
    try:
        if path is None:
            text = resources.files(__package__).joinpath(shipped).read_text("utf-8")
        else:
            if path.stat().st_size > bytes_max:
                raise error(f"{path}: larger than {bytes_max} bytes, not a {what}")
            text = path.read_text("utf-8")
        raw = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise error(f"{what} {path or shipped}: expected a mapping at the top level")
    try:
        loaded = model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{what} {path or shipped} is invalid:\n{exc}") from exc
    if path is None:
        _SHIPPED[(model, shipped)] = loaded
    return loaded
