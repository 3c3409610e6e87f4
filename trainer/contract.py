"""The config contract: a composed config is checked in full before anything is built or written.

`check` walks Hydra's composed config node by node. Each node is validated by pydantic against the
dataclass that owns it (the type Hydra merged it into, or, for the entries of a list such as
`stages.train`, the schema its owner names in `ENTRY_SCHEMAS`): types, the declared domains
(annotated_types constraints), finite floats, keys added with `+`/`++` that the schema does not
know, and the rules each dataclass checks in `__post_init__`. The result is the tree of component
configs itself, ready to build; any problem is one ConfigError naming the full key.
"""

import functools
import os
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import ConfigDict, TypeAdapter, ValidationError

from trainer.config import Config
from trainer.errors import ConfigError, UserError, require_short_name

# Unknown keys are refused, and a float is finite wherever one is expected (no nan, no inf).
STRICTNESS = ConfigDict(extra="forbid", allow_inf_nan=False)


def check(cfg: DictConfig, schema: type = Config) -> Any:
    """The validated config (a `schema`, by default the run config) for a composed config;
    ConfigError (or another UserError) if it is bad."""
    return _validated(cfg, schema, "")


def _validated(node: DictConfig, schema: type, key: str) -> Any:
    values = {name: _value(node, name, schema, _join(key, name)) for name in node}
    try:
        return _adapter(schema).validate_python(values)
    except ValidationError as err:
        raise _first_problem(err, schema, key) from None


def _value(node: DictConfig, name: str, schema: type, key: str) -> Any:
    try:
        value = node[name]
    except MissingMandatoryValue:
        raise ConfigError(key, "missing", "a value for this key") from None
    except OmegaConfBaseException as err:  # a broken interpolation
        raise ConfigError(key, str(err).splitlines()[0], "a value or a valid ${...} interpolation") from None
    entry_schema = getattr(schema, "ENTRY_SCHEMAS", {}).get(name)
    if isinstance(value, ListConfig):
        return [_item(item, entry_schema, f"{key}[{i}]") for i, item in enumerate(value)]
    return _item(value, entry_schema, key) if isinstance(value, DictConfig) else value


def _item(value: Any, entry_schema, key: str) -> Any:
    if not isinstance(value, DictConfig):
        return value
    schema = OmegaConf.get_type(value)
    if not is_dataclass(schema):
        if entry_schema is None:
            return OmegaConf.to_container(value, resolve=True)
        try:
            schema = entry_schema(OmegaConf.to_container(value, resolve=True))
        except ValueError as err:
            raise _keyed(err, key) from None
    return _validated(value, schema, key)


@functools.cache
def _adapter(schema: type) -> TypeAdapter:
    # pydantic reads the settings of a plain dataclass from this attribute; the components stay
    # free of pydantic, and the contract owns how strictly their values are read
    schema.__pydantic_config__ = STRICTNESS
    return TypeAdapter(schema)


def _first_problem(err: ValidationError, schema: type, key: str) -> UserError:
    problem = err.errors()[0]
    where = _join(key, "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem["loc"]).lstrip("."))
    kind = problem["type"]
    if kind == "unexpected_keyword_argument":
        return ConfigError(where, "no such key", ", ".join(f.name for f in fields(schema)))
    if kind in ("missing", "missing_argument"):
        return ConfigError(where, "missing", "a value for this key")
    cause = problem.get("ctx", {}).get("error")
    if isinstance(cause, Exception) and hasattr(cause, "key"):
        return _keyed(cause, key)
    allowed = problem["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
    return ConfigError(where, f"{problem['input']!r} is not allowed", allowed)


def _keyed(err: Exception, key: str) -> UserError:
    """A component's own error (its `key` is relative to the node at `key`) as a ConfigError."""
    problem = getattr(err, "problem", None) or getattr(err, "reason", str(err))
    return ConfigError(_join(key, getattr(err, "key", "")), problem, getattr(err, "allowed", None))


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key and name else key or name


def check_writable(folder: str, key: str) -> None:
    """A folder that the run will create or write into: refuse it now, in one line, if it cannot be.
    Probed by creating a folder in the deepest one that exists, removed at once: os.access says
    writable where mkdir fails (/sys, read-only mounts, ACLs, root-squashed NFS)."""
    if not str(folder).strip():
        raise ConfigError(key, "is empty", "a folder path (files would land in the working directory)")
    path = Path(folder).expanduser().absolute()
    for name in path.parts:
        require_short_name(key, name)
    try:
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(key, f"{path} cannot be created: {existing} is a file", "a folder that can be created")
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=existing))
    except OSError as err:
        raise ConfigError(key, f"{path} cannot be created or written ({err.strerror})", "a writable folder") from None
