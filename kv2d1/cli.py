"""The `kv2d1` command line: parse options, make one library call, render.

Exit codes (PRODUCT.md): 0 consistent / done / ready, 3 findings of severity error / not ready,
4 rollback, 1 error, 2 usage.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from reports.document import redact_document
from reports.progress import Progress
from reports.render import EXTENSIONS, OutputFormat, render
from reports.runs import verify_document
from verifier import __version__
from verifier.calendar import is_date, parse_instant
from verifier.clock import RunClock, parse_instant_option
from verifier.d1 import REMOTE_D1_CHUNK
from verifier.errors import Kv2d1Error
from verifier.files import OutputError, write_text
from verifier.model import Window
from verifier.profile import Profile, load_profile
from verifier.sources import D1Source, KvSource
from verifier.sources.snapshot import redaction_salt
from verifier.verify import Verification

F = TypeVar("F", bound=Callable[..., Any])
EXIT_FINDINGS = 3


@dataclass(frozen=True)
class CommonOptions:
    config: Path | None
    env: str | None
    kv_binding: str | None
    d1_binding: str | None
    remote: bool
    persist_to: Path | None
    snapshot: Path | None
    preview: bool | None
    window: Window
    fmt: OutputFormat | None
    output: Path | None
    profile: str
    quiet: bool
    as_of: dt.datetime | None
    redact: bool = False
    verify_digest: bool = True


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not is_date(value):
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD")
    return value


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_instant_option(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date-time; use e.g. 2026-11-28T15:00:00Z"
        ) from exc


def common_options(func: F) -> F:
    """The options every data command shares, given after the command name as in wrangler."""
    options = [
        click.option(
            "--config",
            "config",
            type=click.Path(path_type=Path),
            help="wrangler.toml or wrangler.jsonc (default: the one in the current directory).",
        ),
        click.option("--env", help="A wrangler environment section."),
        click.option(
            "--kv-binding", help="KV binding to compare (default: the only one, or the profile's)."
        ),
        click.option(
            "--d1-binding", help="D1 binding to compare (default: the only one, or the profile's)."
        ),
        click.option(
            "--local/--remote",
            "local",
            default=True,
            help="Local wrangler state (default) or the Cloudflare REST API.",
        ),
        click.option(
            "--persist-to",
            type=click.Path(path_type=Path),
            help="Directory of wrangler's local state (as wrangler's --persist-to).",
        ),
        click.option(
            "--preview/--no-preview",
            default=None,
            help="Use the KV binding's preview_id (as `wrangler kv key --preview`).",
        ),
        click.option(
            "--snapshot",
            type=click.Path(path_type=Path),
            help="Read both sides from a snapshot file instead of live sources.",
        ),
        click.option(
            "--no-verify-digest",
            "verify_digest",
            is_flag=True,
            flag_value=False,
            default=True,
            help="With --snapshot: read the file without computing its content digest again "
            "(the report says it was not verified).",
        ),
        click.option(
            "--since", callback=_date, help="First business date of the window (YYYY-MM-DD)."
        ),
        click.option(
            "--until", callback=_date, help="Last business date of the window (YYYY-MM-DD)."
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice([f.value for f in OutputFormat]),
            help="Output format (default: text on a terminal, else by -o's extension, else json).",
        ),
        click.option(
            "-o", "--output", type=click.Path(path_type=Path), help="Write the report to FILE."
        ),
        click.option(
            "--profile",
            default="default",
            show_default=True,
            help="Key-pattern profile: a name under schema/profiles/ or a path.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress on stderr."),
        click.option(
            "--redact",
            is_flag=True,
            help="Replace KV/D1 values in reports and snapshots with salted hashes "
            "(salt: KV2D1_REDACT_SALT, else random per run), so they can be shared.",
        ),
        click.option(
            "--as-of",
            "as_of",
            callback=_instant,
            metavar="TIME",
            help="Judge liveness and urgency as of this instant (ISO 8601, UTC unless a zone is "
            "given), for reproducible reruns. Default: now, or a snapshot's capture time.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _common(kw: dict[str, Any]) -> CommonOptions:
    since, until = kw.pop("since"), kw.pop("until")
    if since and until and since > until:
        raise click.BadParameter(f"--since {since} is after --until {until}", param_hint="--since")
    if kw["snapshot"] is not None:
        _refuse_with_snapshot(kw)
    if not kw["verify_digest"] and kw["snapshot"] is None:
        raise click.UsageError("--no-verify-digest applies to --snapshot FILE only")
    fmt = kw.pop("fmt")
    return CommonOptions(
        config=kw.pop("config"),
        env=kw.pop("env"),
        kv_binding=kw.pop("kv_binding"),
        d1_binding=kw.pop("d1_binding"),
        remote=not kw.pop("local"),
        persist_to=kw.pop("persist_to"),
        snapshot=kw.pop("snapshot"),
        preview=kw.pop("preview"),
        window=Window(since, until),
        fmt=OutputFormat(fmt) if fmt else None,
        output=kw.pop("output"),
        profile=kw.pop("profile"),
        quiet=kw.pop("quiet"),
        as_of=kw.pop("as_of"),
        redact=kw.pop("redact"),
        verify_digest=kw.pop("verify_digest"),
    )


SOURCE_OPTIONS: tuple[tuple[str, Callable[[dict[str, Any]], bool]], ...] = (
    ("--remote", lambda kw: not kw["local"]),
    ("--config", lambda kw: kw["config"] is not None),
    ("--env", lambda kw: kw["env"] is not None),
    ("--persist-to", lambda kw: kw["persist_to"] is not None),
    ("--kv-binding", lambda kw: kw["kv_binding"] is not None),
    ("--d1-binding", lambda kw: kw["d1_binding"] is not None),
    ("--preview/--no-preview", lambda kw: kw["preview"] is not None),
)


def _refuse_with_snapshot(kw: dict[str, Any]) -> None:
    """A snapshot file is both sides: options that choose a live source would be ignored."""
    given = [name for name, present in SOURCE_OPTIONS if present(kw)]
    if given:
        raise click.UsageError(
            f"--snapshot reads both sides from a file: {', '.join(given)} would be ignored; "
            "drop them (they choose a live source)"
        )


def translate_errors(func: F) -> F:
    """Our errors become one `Error: …` line and exit 1; Ctrl-C is `Error: interrupted`, exit
    130 (click would print `Aborted!`); nothing else is caught."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Kv2d1Error as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("\nError: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def output_format(opts: CommonOptions) -> OutputFormat:
    if opts.fmt:
        return opts.fmt
    if opts.output is not None:
        return EXTENSIONS.get(opts.output.suffix.lower(), OutputFormat.JSON)
    return OutputFormat.TEXT if sys.stdout.isatty() else OutputFormat.JSON


def emit(doc: dict[str, Any], opts: CommonOptions, *, default: OutputFormat | None = None) -> None:
    fmt = opts.fmt or default or output_format(opts)
    if opts.redact:
        doc = redact_document(doc, redaction_salt())
    try:
        text = render(doc, fmt)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--format") from exc
    if write_output(text, opts) and not opts.quiet:
        click.echo(f"Wrote {fmt.value} report to {opts.output}", err=True)


def write_output(text: str, opts: CommonOptions) -> bool:
    """`text` to --output, else to stdout; whether it went to a file."""
    if opts.output is None:
        click.echo(text, nl=False)
        return False
    try:
        write_text(opts.output, text, private=not opts.redact, what="the report")
    except OutputError as exc:
        raise click.ClickException(str(exc)) from exc
    return True


def _announce_wait(seconds: float) -> None:
    """Say why a remote run pauses: the account's request budget is spent for now."""
    click.echo(
        f"\nwaiting {seconds:.0f} s: the Cloudflare API allows 1,200 requests per 5 minutes "
        "(the run continues by itself)",
        err=True,
    )


@dataclass
class OpenedSources:
    kv: KvSource
    d1: D1Source
    source: dict[str, Any]
    d1_name: str
    clock: RunClock
    d1_chunk: int | None = None

    def verification(
        self,
        opts: CommonOptions,
        profile: Profile,
        *,
        progress: Callable[[str, int], None] | None = None,
    ) -> Verification:
        """A verify run over these sources, with the window the options give, on the run's clock."""
        return Verification(
            kv=self.kv,
            d1=self.d1,
            profile=profile,
            window=opts.window,
            now=self.clock.as_of,
            started=self.clock.started,
            as_of_from=self.clock.basis,
            d1_chunk=self.d1_chunk,
            progress=progress,
            d1_name=self.d1_name,
        )


def open_sources(opts: CommonOptions, profile: Profile, *, writable: bool = False) -> OpenedSources:
    """The KV and D1 sources the options name: a snapshot, the REST API, or local state.

    With --redact the source block says `redacted: true`: reports state it, and a snapshot
    capture stores values as salted hashes because of it.
    """
    opened = _open_sources(opts, profile, writable=writable)
    if opts.redact:
        opened.source = {**opened.source, "redacted": True}
    return opened


def _open_sources(opts: CommonOptions, profile: Profile, *, writable: bool) -> OpenedSources:
    if opts.snapshot is not None:
        from verifier.sources.snapshot import open_snapshot_sources

        kv, d1, source = open_snapshot_sources(
            opts.snapshot, as_of=opts.as_of, verify_digest=opts.verify_digest
        )  # judged as of the capture unless --as-of: the clock says the same
        clock = RunClock.start(opts.as_of, captured_at=parse_instant(source["started_at"]))
        return OpenedSources(kv, d1, source, str(opts.snapshot), clock)
    clock = RunClock.start(opts.as_of)
    from kv2d1.config import load_wrangler_config
    from verifier.sources.local import open_local_sources

    config = load_wrangler_config(opts.config, env=opts.env)
    kv_name = opts.kv_binding or _default_binding(config.kv_namespaces, profile.kv_binding)
    d1_name = opts.d1_binding or _default_binding(config.d1_databases, profile.d1_binding)
    if opts.remote:
        from verifier.sources.remote import open_remote_sources

        kv, d1, source = open_remote_sources(
            config, kv_binding=kv_name, d1_binding=d1_name, as_of=clock.as_of
        )
        if not opts.quiet:
            kv.client.limiter.on_wait = _announce_wait
        name = source.get("d1_database_name") or "<db>"
        return OpenedSources(kv, d1, source, name, clock, d1_chunk=REMOTE_D1_CHUNK)
    kv, d1, source = open_local_sources(
        config,
        kv_binding=kv_name,
        d1_binding=d1_name,
        persist_to=opts.persist_to,
        preview=opts.preview,
        writable=writable,
        now_ms=clock.as_of_ms,
    )
    name = source.get("d1_database_name") or source.get("d1_binding") or "<db>"
    return OpenedSources(kv, d1, source, name, clock)


def _default_binding(bindings: tuple[Any, ...], preferred: str | None) -> str | None:
    """The profile's binding when the config has it and several exist; else let config decide."""
    names = [b.binding for b in bindings]
    if len(names) > 1 and preferred in names:
        return preferred
    return None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kv2d1")
def main() -> None:
    """Make a Cloudflare Workers KV → D1 migration provably safe.

    Snapshot KV keys and D1 rows, normalise both into one model, diff them, backfill what D1
    lacks, and report readiness against the migration plan's metrics.
    """


@main.command()
@common_options
@translate_errors
def verify(**kw: Any) -> None:
    """Diff KV with D1: which records D1 lacks, which disagree, which are broken.

    Exit 0 when consistent (at least one KV record compared, no finding of severity error), 3
    when there are findings of severity error or nothing to compare (KV empty, every key
    expired, no key the profile knows, an empty window), 1 on error, 2 on bad usage.

    Example: kv2d1 verify --config wrangler.toml --since 2026-11-16 --until 2026-11-27
    """
    opts = _common(kw)
    profile = load_profile(opts.profile)
    opened = open_sources(opts, profile)
    with Progress.for_terminal("kv", quiet=opts.quiet) as progress:
        verification = opened.verification(opts, profile, progress=progress)
        doc, _, summary = verify_document(verification, source=opened.source)
    emit(doc, opts)
    if not doc["consistency"]["consistent"]:
        if summary.errors == 0 and not opts.quiet:
            click.echo(f"Nothing to compare: {doc['consistency']['nothing_compared']}", err=True)
        sys.exit(EXIT_FINDINGS)


def _load_optional_commands() -> None:
    """Commands that live in their own modules register themselves on `main`."""
    import importlib

    for module in (
        "kv2d1.cmd_backfill",
        "kv2d1.cmd_snapshot",
        "kv2d1.cmd_report",
        "kv2d1.cmd_probe",
        "kv2d1.cmd_demo",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_load_optional_commands()
