"""One entry point for every output format of a report document."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from typing import Any

from reports.text import render_text


class OutputFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    JUNIT = "junit"
    HTML = "html"


EXTENSIONS = {
    ".json": OutputFormat.JSON,
    ".md": OutputFormat.MARKDOWN,
    ".xml": OutputFormat.JUNIT,
    ".html": OutputFormat.HTML,
    ".htm": OutputFormat.HTML,
    ".txt": OutputFormat.TEXT,
}


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"


def _renderers() -> dict[OutputFormat, Callable[[dict[str, Any]], str]]:
    renderers: dict[OutputFormat, Callable[[dict[str, Any]], str]] = {
        OutputFormat.TEXT: render_text,
        OutputFormat.JSON: render_json,
    }
    try:  # richer formats arrive with the report command
        from reports.formats import EXTRA_RENDERERS  # type: ignore[import-not-found,unused-ignore]

        renderers.update(EXTRA_RENDERERS)
    except ImportError as exc:
        if exc.name != "reports.formats":
            raise
    return renderers


def render(doc: dict[str, Any], fmt: OutputFormat) -> str:
    renderer = _renderers().get(fmt)
    if renderer is None:
        raise ValueError(f"format {fmt.value!r} is not available for this command")
    return renderer(doc)
