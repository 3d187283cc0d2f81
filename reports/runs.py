"""Library calls behind the CLI commands: run a job, return the report document."""

from __future__ import annotations

from typing import Any

from reports.document import Consistency, Summary, build_document, collect
from verifier.model import Finding
from verifier.verify import Verification


def verify_document(
    verification: Verification, *, source: dict[str, Any]
) -> tuple[dict[str, Any], list[Finding], Summary]:
    """Run a verification to the end; the JSON document, the findings and their summary."""
    findings, summary = collect(verification.findings())
    doc = build_document(
        command="verify",
        source=source,
        window=verification.window,
        coverage=verification.coverage,
        findings=findings,
        summary=summary,
        clock=verification.clock,
        extra={"consistency": Consistency.of(verification.coverage, summary).to_json()},
    )
    return doc, findings, summary
