"""The wrangler config: find the file, parse TOML or JSONC, pick an environment and its bindings.

Only what kv2d1 needs is read: `name`, `account_id`, `kv_namespaces` and `d1_databases`. As in
wrangler, a named environment (`--env NAME` → `env.NAME`) inherits `account_id` but not bindings:
an environment without its own `kv_namespaces` / `d1_databases` has none.

Without `--config`, the current directory's `wrangler.json`, `wrangler.jsonc` or `wrangler.toml`
is used, in wrangler's order. (wrangler also searches parent directories; kv2d1 does not, so a
report never silently describes another project.)

The rules that turn a binding into the id its local state is stored under (`local_kv_id`,
`local_d1_id`) and the persist root (`persist_root`) live with the local-state reader in
`verifier.sources.local`, since `verifier` never imports `kv2d1`; they are re-exported here.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import json5

from verifier.errors import ConfigError
from verifier.sources.local import local_d1_id, local_kv_id, persist_root

__all__ = [
    "CONFIG_NAMES",
    "D1Binding",
    "KvBinding",
    "WranglerConfig",
    "find_wrangler_config",
    "load_wrangler_config",
    "local_d1_id",
    "local_kv_id",
    "persist_root",
]

CONFIG_NAMES = ("wrangler.json", "wrangler.jsonc", "wrangler.toml")
_JSON5_ERROR = re.compile(r"^<string>:(?P<line>\d+) (?P<what>.*) at column (?P<column>\d+)$")


@dataclass(frozen=True, slots=True)
class KvBinding:
    """A `kv_namespaces` entry: the binding name and its namespace ids."""

    binding: str
    id: str | None = None
    preview_id: str | None = None


@dataclass(frozen=True, slots=True)
class D1Binding:
    """A `d1_databases` entry: the binding name, the database's name and ids."""

    binding: str
    database_name: str | None = None
    database_id: str | None = None
    preview_database_id: str | None = None


_B = TypeVar("_B", KvBinding, D1Binding)


@dataclass(frozen=True, slots=True)
class WranglerConfig:
    """One environment of a wrangler config file (the top level when `env` is None).

    `path` is absolute; `directory` is its parent, where wrangler keeps `.wrangler/state`.
    `name` is the worker's name as wrangler derives it (`<name>-<env>` unless the environment
    names itself).
    """

    path: Path
    directory: Path
    name: str | None
    account_id: str | None
    env: str | None
    kv_namespaces: tuple[KvBinding, ...]
    d1_databases: tuple[D1Binding, ...]

    @property
    def where(self) -> str:
        """The file and section, for messages: `wrangler.toml [env.staging]`."""
        return self.path.name + (f" [env.{self.env}]" if self.env else "")

    def kv_binding(self, name: str | None = None, default: str | None = None) -> KvBinding:
        """The KV binding `name`; None → the only one, else `default` when it exists."""
        return self._choose(self.kv_namespaces, name, default, "KV", "kv_namespaces")

    def d1_binding(self, name: str | None = None, default: str | None = None) -> D1Binding:
        """The D1 binding `name`; None → the only one, else `default` when it exists."""
        return self._choose(self.d1_databases, name, default, "D1", "d1_databases")

    def _choose(
        self, bindings: tuple[_B, ...], name: str | None, default: str | None, kind: str, key: str
    ) -> _B:
        by_name = {b.binding: b for b in bindings}
        names = ", ".join(by_name)
        if not bindings:
            raise ConfigError(self._none_message(kind, key))
        if name is not None and name not in by_name:
            raise ConfigError(f"no {kind} binding {name!r} in {self.where}; bindings: {names}")
        chosen = name if name is not None else default if default in by_name else None
        if chosen is not None:
            return by_name[chosen]
        if len(bindings) > 1:
            raise ConfigError(
                f"several {kind} bindings ({names}); choose one with --{kind.lower()}-binding"
            )
        return bindings[0]

    def _none_message(self, kind: str, key: str) -> str:
        message = f"no {kind} binding in {self.where}; add a {key} entry"
        if self.env:
            message += f" to [env.{self.env}] (environments do not inherit {key})"
        return message


def find_wrangler_config(directory: Path) -> Path:
    """The wrangler config file of `directory`, in wrangler's order of preference."""
    for name in CONFIG_NAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no wrangler.toml or wrangler.jsonc in {directory.absolute()}; pass --config PATH"
    )


def load_wrangler_config(path: Path | None, *, env: str | None = None) -> WranglerConfig:
    """Read the wrangler config at `path` (None → the current directory's) for `env`.

    Example: `load_wrangler_config(Path("wrangler.toml"), env="staging").kv_binding()`.
    """
    path = Path(os.path.abspath(path if path is not None else find_wrangler_config(Path.cwd())))
    document = _parse(path, _read(path))
    section = _section(document, env, path)
    where = path.name + (f" [env.{env}]" if env else "")
    return WranglerConfig(
        path=path,
        directory=path.parent,
        name=_worker_name(document, section, env, where),
        account_id=_text(section, "account_id", where) or _text(document, "account_id", path.name),
        env=env,
        kv_namespaces=tuple(
            _kv(entry, where) for entry in _entries(section, "kv_namespaces", where)
        ),
        d1_databases=tuple(_d1(entry, where) for entry in _entries(section, "d1_databases", where)),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError(f"wrangler config {path} does not exist; check --config") from exc
    except IsADirectoryError as exc:
        raise ConfigError(
            f"{path} is a directory; pass --config PATH/wrangler.toml (or .jsonc)"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def _parse(path: Path, text: str) -> dict[str, Any]:
    """The document as a dict: TOML for `.toml`, JSON with comments for `.json` / `.jsonc`."""
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}; fix the file") from exc
    if path.suffix not in (".json", ".jsonc"):
        raise ConfigError(f"{path} is neither .toml, .json nor .jsonc; pass a wrangler config")
    try:
        document = json5.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"{path} is not valid JSONC: {_json5_position(exc)}; fix the file"
        ) from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path} must hold one JSON object; it holds {type(document).__name__}")
    return document


def _json5_position(exc: ValueError) -> str:
    """json5's `<string>:3 Unexpected "x" at column 2` as `line 3, column 2: Unexpected "x"`."""
    match = _JSON5_ERROR.match(str(exc))
    if match is None:
        return str(exc)
    return f"line {match['line']}, column {match['column']}: {match['what']}"


def _section(document: dict[str, Any], env: str | None, path: Path) -> dict[str, Any]:
    """The top level, or the `env.NAME` table."""
    if env is None:
        return document
    envs = document.get("env") or {}
    if not isinstance(envs, dict):
        raise ConfigError(f"`env` in {path.name} must be a table of environments")
    section = envs.get(env)
    if not isinstance(section, dict):
        known = ", ".join(sorted(envs)) or "none"
        raise ConfigError(
            f"no environment {env!r} in {path.name}; environments: {known} (check --env)"
        )
    return section


def _worker_name(
    document: dict[str, Any], section: dict[str, Any], env: str | None, where: str
) -> str | None:
    top = _text(document, "name", where)
    if env is None:
        return top
    return _text(section, "name", where) or (f"{top}-{env}" if top else None)


def _entries(section: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    entries = section.get(key) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{key} in {where} must be a list of tables (one per binding)")
    return entries


def _kv(entry: dict[str, Any], where: str) -> KvBinding:
    binding = _binding_name(entry, "kv_namespaces", where)
    return KvBinding(binding, _text(entry, "id", where), _text(entry, "preview_id", where))


def _d1(entry: dict[str, Any], where: str) -> D1Binding:
    binding = _binding_name(entry, "d1_databases", where)
    return D1Binding(
        binding,
        _text(entry, "database_name", where),
        _text(entry, "database_id", where),
        _text(entry, "preview_database_id", where),
    )


def _binding_name(entry: dict[str, Any], key: str, where: str) -> str:
    binding = entry.get("binding")
    if not isinstance(binding, str) or not binding:
        raise ConfigError(f'a {key} entry in {where} has no binding; add binding = "NAME"')
    return binding


def _text(table: dict[str, Any], key: str, where: str) -> str | None:
    """An optional string setting; empty strings count as unset."""
    value = table.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} in {where} must be a string, not {value!r}")
    return value
