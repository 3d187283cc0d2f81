"""Rows of the reliability matrix that tests outside tests/reliability/ already cover.

conftest.py marks each listed test `reliability(kind, case, expected)`, so `pytest -m reliability`
runs it and docs/RELIABILITY.md lists it; the test itself stays where it is.
"""

from __future__ import annotations

R = "tests/verifier/test_remote.py::"
E = "tests/test_remote_e2e.py::"
S = "tests/verifier/test_snapshot.py::"
A = "tests/backfill/test_apply.py::"
B = "tests/backfill/test_cli_backfill.py::"
V = "tests/kv2d1/test_cli_verify.py::"
C = "tests/kv2d1/test_config.py::"
L = "tests/verifier/test_local_sources.py::"

FAULT = "fault"
BAD = "bad_input"

EXISTING: dict[str, tuple[str, str, str]] = {
    R + "test_a_429_waits_as_long_as_the_api_asks": (
        FAULT,
        "429 with Retry-After (seconds, date, ms)",
        "wait as asked, retry",
    ),
    R + "test_a_wait_beyond_the_ceiling_fails_at_once_with_the_reason": (
        FAULT,
        "429 asking for more than the ceiling",
        "one clear error, no wait",
    ),
    R + "test_server_errors_back_off_exponentially_with_jitter_then_fail": (
        FAULT,
        "5xx on every attempt",
        "backoff with jitter, then one clear error",
    ),
    R + "test_transport_failures_are_retried": (
        FAULT,
        "connect error, dropped body, read timeout",
        "retry",
    ),
    R + "test_a_non_json_success_answer_is_retried_then_one_error": (
        FAULT,
        "non-JSON or truncated answer with HTTP 200, every time",
        "retried like a 5xx (bounded), then one clear error",
    ),
    R + "test_one_glitched_success_answer_costs_one_retry_not_the_run": (
        FAULT,
        "one truncated JSON or HTML body with HTTP 200 (a proxy glitch)",
        "one retry; the run goes on",
    ),
    R + "test_an_api_slower_than_the_timeout_is_one_error": (
        FAULT,
        "API slower than the timeout",
        "retry, then one clear error",
    ),
    R + "test_listing_sends_the_prefix_every_time_and_survives_short_and_empty_pages": (
        FAULT,
        "cursor pages short and empty",
        "every key listed once",
    ),
    R + "test_a_cursor_that_does_not_move_stops_the_listing": (
        FAULT,
        "cursor page repeated (cursor does not move)",
        "stop with a clear error, no endless loop",
    ),
    R + "test_a_batch_is_atomic_and_an_sql_error_rolls_it_all_back": (
        FAULT,
        "D1 7500 in one statement of a remote batch",
        "whole batch rolled back",
    ),
    R + "test_the_token_is_redacted_even_when_the_api_or_the_network_repeats_it": (
        FAULT,
        "API or network error text repeating the token",
        "token redacted",
    ),
    E + "test_faults_short_pages_and_dropped_connections_change_nothing": (
        FAULT,
        "mixed 429/5xx/drops/short pages end to end",
        "same findings and snapshot digest",
    ),
    E + "test_a_snapshot_killed_midway_resumes_to_the_same_digest": (
        FAULT,
        "remote snapshot killed midway",
        "--resume to the same digest",
    ),
    E + "test_remote_failures_are_one_error_line": (
        FAULT,
        "remote failures (auth, missing resources)",
        "one Error line, exit 1, no file",
    ),
    S + "test_a_capture_killed_by_sigkill_resumes_to_the_same_content": (
        FAULT,
        "SIGKILL of a snapshot",
        "--resume to the same content",
    ),
    S + "test_a_full_disk_is_one_error_and_nothing_claims_to_be_finished": (
        FAULT,
        "disk full while writing a snapshot",
        "one error; file not marked finished",
    ),
    S + "test_no_space_to_create_the_file_is_one_error_and_leaves_nothing": (
        FAULT,
        "no space to create the snapshot file",
        "one error; no file",
    ),
    S + "test_a_source_failure_after_some_pages_keeps_them_and_says_to_resume": (
        FAULT,
        "source failure mid-capture",
        "pages kept; says to --resume",
    ),
    S + "test_the_file_is_owner_only_and_holds_no_secret": (
        FAULT,
        "snapshot file permissions and secrets",
        "0600, no token inside",
    ),
    "tests/backfill/test_kill_resume.py::test_a_backfill_killed_anywhere_resumes_to_the_same_database": (
        FAULT,
        "SIGKILL of a backfill at random points",
        "rerun resumes to the same database",
    ),
    A + "test_a_concurrent_writer_of_the_same_jobs_causes_no_duplicates": (
        FAULT,
        "dual-writer inserting the same jobs during backfill",
        "no duplicates",
    ),
    A + "test_a_job_committed_before_its_done_line_is_recovered": (
        FAULT,
        "kill between commit and ledger line",
        "recovered, not duplicated",
    ),
    A + "test_a_line_cut_short_by_a_kill_is_ignored": (
        FAULT,
        "ledger line cut short by a kill",
        "ignored",
    ),
    B + "test_a_locked_database_is_one_error_line_and_nothing_changes": (
        FAULT,
        "local D1 locked by another process",
        "one Error line; nothing changes",
    ),
    B + "test_a_read_only_database_is_one_error_line_and_nothing_changes": (
        FAULT,
        "local D1 read-only",
        "one Error line; nothing changes",
    ),
    L + "test_a_locked_database_names_wrangler_dev": (
        FAULT,
        "local D1 locked (library level)",
        "error names wrangler dev",
    ),
    C + "test_malformed_files_name_the_file_and_the_position": (
        BAD,
        "malformed wrangler.toml / wrangler.jsonc",
        "error names file and position",
    ),
    C + "test_missing_file_and_directory": (
        BAD,
        "missing config file or directory",
        "one clear error",
    ),
    C + "test_binding_errors_list_what_exists": (
        BAD,
        "missing or ambiguous bindings",
        "error lists the bindings that exist",
    ),
    C + "test_an_unknown_environment_lists_those_that_exist": (
        BAD,
        "unknown --env",
        "error lists the environments",
    ),
    V + "test_unknown_binding_lists_the_existing_ones": (
        BAD,
        "unknown --kv-binding",
        "one Error line",
    ),
    V + "test_kv_value_that_is_not_utf8_is_a_finding_not_a_crash": (
        BAD,
        "KV value not UTF-8",
        "invalid_kv_payload finding",
    ),
    V + "test_d1_without_plan_tables_names_the_schema_file": (
        BAD,
        "D1 without the plan's tables",
        "one Error line naming the schema file",
    ),
    V + "test_corrupt_sqlite_file": (BAD, "local D1 file not SQLite", "one Error line"),
    V + "test_bad_dates_are_usage_errors": (
        BAD,
        "--since 2026-13-01; --since after --until",
        "usage error, exit 2",
    ),
    S + "test_a_file_that_is_not_sqlite_is_corrupt": (
        BAD,
        "snapshot file that is not SQLite",
        "one clear error",
    ),
    S + "test_a_truncated_snapshot_is_corrupt": (BAD, "truncated snapshot file", "one clear error"),
    S + "test_a_foreign_sqlite_file_is_not_a_snapshot": (
        BAD,
        "foreign SQLite file as snapshot",
        "one clear error",
    ),
    S + "test_a_snapshot_from_a_newer_kv2d1_says_to_upgrade": (
        BAD,
        "snapshot from a newer kv2d1",
        "says to upgrade",
    ),
    L + "test_a_query_on_a_missing_table_is_a_schema_error": (
        BAD,
        "query on a missing table",
        "schema error",
    ),
    L + "test_metadata_that_is_not_json_names_the_key": (
        BAD,
        "KV metadata not JSON",
        "error names the key",
    ),
    "tests/verifier/test_shapes.py::test_junk_matches_no_shape": (
        BAD,
        "KV JSON of no known shape",
        "matches no shape",
    ),
    "tests/backfill/test_plan.py::test_non_finite_floats_are_refused": (
        BAD,
        "non-finite floats in a backfill",
        "refused",
    ),
    S + "test_an_edited_snapshot_is_refused_for_its_digest": (
        BAD,
        "snapshot edited after its capture (a D1 row, a KV value, a deleted row)",
        "refused: digest mismatch; --no-verify-digest reads it, saying so",
    ),
    V + "test_a_snapshot_edited_after_its_capture_is_one_error_line": (
        BAD,
        "verify --snapshot of a tampered file",
        "one Error line naming the digest mismatch, exit 1, no report",
    ),
    R + "test_two_alternating_cursors_stop_the_listing_after_one_request_more": (
        FAULT,
        "API alternating two cursors",
        "one Error line after one request more than the pages, no report",
    ),
    R + "test_a_rewound_cursor_stops_the_listing": (
        FAULT,
        "API rewinding to an earlier cursor",
        "one Error line, bounded requests",
    ),
    R + "test_a_page_that_repeats_the_page_before_is_refused_before_its_keys_count": (
        FAULT,
        "API page repeating earlier keys",
        "refused before a key counts twice",
    ),
    R + "test_keys_out_of_byte_order_within_one_page_are_refused": (
        FAULT,
        "API listing keys out of UTF-8 byte order",
        "refused",
    ),
}
