"""The one exception hierarchy of kv2d1.

Kv2d1Error                 base: every error a user can fix; the CLI prints it as one `Error: …` line
├── ConfigError            wrangler config missing, malformed, or a binding unknown / ambiguous
├── ProfileError           a profile file that is missing or malformed
├── SourceError            a source (local state, REST API, snapshot) cannot be read
│   ├── StateNotFoundError local state directory or file absent
│   ├── D1SchemaError      the D1 database lacks the plan's tables or columns
│   ├── CorruptSourceError a SQLite file that is not a database, a truncated snapshot
│   └── ApiError           the Cloudflare REST API refused or failed (never carries the token)
├── SnapshotError          a snapshot file that cannot be written or resumed
└── BackfillError          a backfill that cannot be planned or applied
    └── TargetLockedError  the D1 database is locked by another process (e.g. `wrangler dev`)

Third-party exceptions are translated once, where they arise, with `raise … from exc`.
"""

from __future__ import annotations


class Kv2d1Error(Exception):
    """Base class: a problem the user can act on; its message says what and how to fix it."""


class ConfigError(Kv2d1Error):
    """The wrangler configuration cannot be used as asked."""


class ProfileError(Kv2d1Error):
    """A profile (key patterns → model mapping) is missing or malformed."""


class SourceError(Kv2d1Error):
    """A source of KV entries or D1 rows cannot be read."""


class StateNotFoundError(SourceError):
    """The local wrangler state (or one of its files) does not exist."""


class D1SchemaError(SourceError):
    """The D1 database does not hold the plan's tables."""


class CorruptSourceError(SourceError):
    """A file that should be SQLite (or a snapshot) is damaged or of another kind."""


class ApiError(SourceError):
    """The Cloudflare REST API answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class SnapshotError(Kv2d1Error):
    """A snapshot file cannot be written, resumed or trusted."""


class BackfillError(Kv2d1Error):
    """A backfill cannot be planned or applied."""


class TargetLockedError(BackfillError):
    """The D1 database is held by another process."""
