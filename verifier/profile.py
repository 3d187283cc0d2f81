"""Profiles: data files that map KV key patterns to the shared model.

A profile lives under `schema/profiles/` (or any path). Each pattern has a literal `prefix` (a
cheap first test), a `regex` with named groups `date` (and `time` for per-run keys, `job` for
status keys), a `kind` (`job`, `report`, `status`), the job type it stands for, and the payload
shapes to try in order. Another migration describes its own keys by writing a new file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from verifier.errors import ProfileError
from verifier.model import LATEST, JobType

SCHEMA_PACKAGE = "kv2d1.schema"
KINDS = ("job", "report", "status")


def schema_dir() -> Path:
    """The installed `schema/` directory (package data), or the repository's."""
    try:
        from importlib.resources import files

        return Path(str(files(SCHEMA_PACKAGE)))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - running from a bare checkout
        return Path(__file__).resolve().parents[1] / "schema"


@dataclass(frozen=True, slots=True)
class KeyPattern:
    name: str
    prefix: str
    regex: re.Pattern[str]
    kind: str
    job_type: str | None
    job_type_map: dict[str, str]
    run: str
    shapes: tuple[str, ...]
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """What a KV key stands for under a profile."""

    pattern: KeyPattern
    date: str
    job_type: str
    run: str


@dataclass(frozen=True)
class Profile:
    name: str
    patterns: tuple[KeyPattern, ...]
    schedule: dict[str, str]
    status_map: dict[str, str]
    kv_binding: str | None
    d1_binding: str | None
    timezone: str
    calendar: str
    source: str

    @cached_property
    def prefixes(self) -> tuple[str, ...]:
        """The distinct literal prefixes of the patterns, shortest first."""
        return tuple(sorted({p.prefix for p in self.patterns}, key=len))

    @cached_property
    def listing_prefixes(self) -> tuple[str, ...]:
        """The prefixes to list so that every key a pattern can match is listed exactly once:
        `prefixes` without those that extend a shorter one, in key order."""
        kept: list[str] = []
        for prefix in self.prefixes:  # shortest first: a covering prefix is seen first
            if not any(prefix.startswith(k) for k in kept):
                kept.append(prefix)
        return tuple(sorted(kept, key=lambda p: p.encode("utf-8")))

    def match(self, key: str) -> KeyMatch | None:
        """The first pattern the key matches, or None (a key skipped by pattern)."""
        for pattern in self.patterns:
            if not key.startswith(pattern.prefix):
                continue
            m = pattern.regex.match(key)
            if m is None:
                continue
            job_type = _job_type_of(pattern, m)
            if job_type is None:
                continue
            run = m.group("time") if pattern.run == "from_key" else LATEST
            return KeyMatch(pattern, m.group("date"), job_type, run)
        return None

    def ttl_for(self, job_type: str) -> int:
        """The longest time any key of this job type was kept (seconds)."""
        ttls = [p.ttl_seconds for p in self.patterns if job_type in _job_types_of(p)]
        return max(ttls, default=0)

    def pattern_order(self, pattern: KeyPattern) -> int:
        return self.patterns.index(pattern)


def _job_type_of(pattern: KeyPattern, m: re.Match[str]) -> str | None:
    if pattern.job_type_map:
        return pattern.job_type_map.get(m.group("job"))
    return pattern.job_type


def _job_types_of(pattern: KeyPattern) -> set[str]:
    if pattern.job_type_map:
        return set(pattern.job_type_map.values())
    return {pattern.job_type} if pattern.job_type else set()


def load_profile(name_or_path: str | Path = "default") -> Profile:
    """Load a profile by name (a file under `schema/profiles/`) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = schema_dir() / "profiles" / f"{name_or_path}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ProfileError(f"profile {str(path)!r} not found; pass --profile PATH") from exc
    except (OSError, ValueError) as exc:
        raise ProfileError(f"profile {str(path)!r} cannot be read: {exc}") from exc
    return _profile_from_json(data, source=str(path))


def _profile_from_json(data: dict[str, Any], *, source: str) -> Profile:
    try:
        patterns = tuple(_pattern_from_json(p) for p in data["patterns"])
        return Profile(
            name=str(data["name"]),
            patterns=patterns,
            schedule=dict(data.get("schedule", {})),
            status_map=dict(data.get("status_map", {})),
            kv_binding=data.get("kv_binding"),
            d1_binding=data.get("d1_binding"),
            timezone=str(data.get("timezone", "America/New_York")),
            calendar=str(data.get("calendar", "NYSE")),
            source=source,
        )
    except (KeyError, TypeError, re.error, ValueError) as exc:
        raise ProfileError(f"profile {source!r} is malformed: {exc!r}") from exc


def _pattern_from_json(p: dict[str, Any]) -> KeyPattern:
    kind = p["kind"]
    if kind not in KINDS:
        raise ValueError(f"pattern {p['name']}: kind must be one of {KINDS}")
    job_type = p.get("job_type")
    job_type_map = dict(p.get("job_type_map", {}))
    for jt in [job_type, *job_type_map.values()]:
        if jt is not None:
            JobType(jt)  # raises ValueError for a job type the plan's CHECK would refuse
    regex = re.compile(p["regex"])
    if "date" not in regex.groupindex:
        raise ValueError(f"pattern {p['name']}: regex needs a (?P<date>…) group")
    return KeyPattern(
        name=p["name"],
        prefix=p.get("prefix", ""),
        regex=regex,
        kind=kind,
        job_type=job_type,
        job_type_map=job_type_map,
        run=p.get("run", "latest"),
        shapes=tuple(p.get("shapes", ())),
        ttl_seconds=int(p.get("ttl_seconds", 0)),
    )
