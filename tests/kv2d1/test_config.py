"""The wrangler config: discovery, TOML and JSONC, environments, bindings, local ids."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kv2d1.config import (
    D1Binding,
    KvBinding,
    load_wrangler_config,
    local_d1_id,
    local_kv_id,
    persist_root,
)
from verifier.errors import ConfigError

TOML = """\
name = "predict"
account_id = "acc-top"
compatibility_date = "2026-04-01"

[[kv_namespaces]]
binding = "TRADING_RESULTS"
id = "kv-prod"
preview_id = "kv-preview"

[[kv_namespaces]]
binding = "CACHE"
id = "kv-cache"

[[d1_databases]]
binding = "PREDICT_JOBS_DB"
database_name = "cct-predict-jobs"
database_id = "00000000-0000-0000-0000-000000000001"

[env.staging]
name = "predict-stg"

[[env.staging.kv_namespaces]]
binding = "TRADING_RESULTS"
id = "kv-staging"

[env.bare]
account_id = "acc-bare"
"""

JSONC = """\
// wrangler.jsonc with comments and trailing commas
{
  "name": "predict",
  /* block comment */
  "kv_namespaces": [
    { "binding": "KV", "id": "kv-1", },
  ],
  "d1_databases": [
    { "binding": "DB", "database_name": "db", "database_id": "d1-1", "preview_database_id": "d1-p", },
  ],
  "env": { "dev": { "kv_namespaces": [{ "binding": "KV", "preview_id": "kv-dev" }], }, },
}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# --- finding and parsing ----------------------------------------------------------------------


def test_toml_top_level(tmp_path: Path) -> None:
    config = load_wrangler_config(write(tmp_path, "wrangler.toml", TOML), env=None)

    assert config.path == tmp_path / "wrangler.toml"
    assert config.directory == tmp_path
    assert (config.name, config.account_id, config.env) == ("predict", "acc-top", None)
    assert config.kv_namespaces == (
        KvBinding("TRADING_RESULTS", "kv-prod", "kv-preview"),
        KvBinding("CACHE", "kv-cache", None),
    )
    assert config.d1_databases == (
        D1Binding("PREDICT_JOBS_DB", "cct-predict-jobs", "00000000-0000-0000-0000-000000000001"),
    )


def test_jsonc_with_comments_and_trailing_commas(tmp_path: Path) -> None:
    config = load_wrangler_config(write(tmp_path, "wrangler.jsonc", JSONC), env=None)

    assert config.kv_namespaces == (KvBinding("KV", "kv-1"),)
    assert config.d1_databases == (D1Binding("DB", "db", "d1-1", "d1-p"),)


def test_without_a_path_the_current_directory_is_searched_in_wranglers_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "wrangler.toml", TOML)
    assert load_wrangler_config(None, env=None).path == tmp_path / "wrangler.toml"

    write(tmp_path, "wrangler.jsonc", JSONC)
    assert load_wrangler_config(None, env=None).path == tmp_path / "wrangler.jsonc"

    write(tmp_path, "wrangler.json", '{"name": "j", "kv_namespaces": []}')
    assert load_wrangler_config(None, env=None).name == "j"


def test_a_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "worker").mkdir()
    write(tmp_path / "worker", "wrangler.toml", TOML)
    monkeypatch.chdir(tmp_path)

    config = load_wrangler_config(Path("worker/../worker/wrangler.toml"), env=None)

    assert config.path == tmp_path / "worker" / "wrangler.toml"
    assert config.directory == tmp_path / "worker"


def test_no_config_in_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_wrangler_config(None, env=None)
    assert (
        str(caught.value) == f"no wrangler.toml or wrangler.jsonc in {tmp_path}; pass --config PATH"
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "wrangler.toml",
            'name = "x"\n\n[[kv_namespaces]]\nbinding = = "KV"\n',
            r"wrangler\.toml is not valid TOML: .*\(at line 4, column 11\); fix the file",
        ),
        (
            "wrangler.jsonc",
            '{\n  // a comment\n  "name": "x",\n  "kv_namespaces": [ { "binding" "KV" } ],\n}\n',
            r"wrangler\.jsonc is not valid JSONC: line 4, column 34: Unexpected .*; fix the file",
        ),
        ("wrangler.jsonc", "[1, 2]", r"must hold one JSON object; it holds list"),
        ("wrangler.toml", "kv_namespaces = 3\n", r"kv_namespaces in wrangler\.toml must be a list"),
        (
            "wrangler.toml",
            '[[kv_namespaces]]\nid = "x"\n',
            r'a kv_namespaces entry in wrangler\.toml has no binding; add binding = "NAME"',
        ),
        (
            "wrangler.toml",
            '[[d1_databases]]\nbinding = "DB"\ndatabase_id = 7\n',
            r"database_id in wrangler\.toml must be a string, not 7",
        ),
    ],
)
def test_malformed_files_name_the_file_and_the_position(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_wrangler_config(path, env=None)
    assert "\n" not in str(caught.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist; check --config"):
        load_wrangler_config(tmp_path / "nope.toml", env=None)
    with pytest.raises(ConfigError, match=r"is a directory; pass --config PATH/wrangler.toml"):
        load_wrangler_config(tmp_path, env=None)


# --- environments -----------------------------------------------------------------------------


def test_an_environment_does_not_inherit_bindings_but_inherits_the_account(tmp_path: Path) -> None:
    path = write(tmp_path, "wrangler.toml", TOML)

    staging = load_wrangler_config(path, env="staging")
    bare = load_wrangler_config(path, env="bare")

    assert staging.kv_namespaces == (KvBinding("TRADING_RESULTS", "kv-staging"),)
    assert staging.d1_databases == ()
    assert (staging.name, staging.account_id) == ("predict-stg", "acc-top")
    assert (bare.name, bare.account_id, bare.kv_namespaces) == ("predict-bare", "acc-bare", ())


def test_an_environment_in_jsonc(tmp_path: Path) -> None:
    config = load_wrangler_config(write(tmp_path, "wrangler.jsonc", JSONC), env="dev")
    assert config.kv_namespaces == (KvBinding("KV", None, "kv-dev"),)


def test_an_unknown_environment_lists_those_that_exist(tmp_path: Path) -> None:
    path = write(tmp_path, "wrangler.toml", TOML)
    with pytest.raises(ConfigError) as caught:
        load_wrangler_config(path, env="prod")
    assert str(caught.value) == (
        "no environment 'prod' in wrangler.toml; environments: bare, staging (check --env)"
    )


# --- choosing a binding -----------------------------------------------------------------------


def test_binding_by_name_only_one_or_default(tmp_path: Path) -> None:
    config = load_wrangler_config(write(tmp_path, "wrangler.toml", TOML), env=None)

    assert config.kv_binding("CACHE").id == "kv-cache"
    assert config.kv_binding(None, default="TRADING_RESULTS").id == "kv-prod"
    assert config.d1_binding(None).binding == "PREDICT_JOBS_DB"
    assert config.d1_binding(None, default="ELSEWHERE").binding == "PREDICT_JOBS_DB"


def test_binding_errors_list_what_exists(tmp_path: Path) -> None:
    config = load_wrangler_config(write(tmp_path, "wrangler.toml", TOML), env=None)
    staging = load_wrangler_config(config.path, env="staging")

    with pytest.raises(ConfigError) as unknown:
        staging.kv_binding("X")
    with pytest.raises(ConfigError) as several:
        config.kv_binding(None, default="MISSING")
    with pytest.raises(ConfigError) as none:
        staging.d1_binding(None)

    assert str(unknown.value) == (
        "no KV binding 'X' in wrangler.toml [env.staging]; bindings: TRADING_RESULTS"
    )
    assert str(several.value) == (
        "several KV bindings (TRADING_RESULTS, CACHE); choose one with --kv-binding"
    )
    assert str(none.value) == (
        "no D1 binding in wrangler.toml [env.staging]; add a d1_databases entry to "
        "[env.staging] (environments do not inherit d1_databases)"
    )


# --- which local id ---------------------------------------------------------------------------

BOTH = KvBinding("KV", "kv-id", "kv-preview")
ONLY_ID = KvBinding("KV", "kv-id")
ONLY_PREVIEW = KvBinding("KV", None, "kv-preview")
NEITHER = KvBinding("KV")


@pytest.mark.parametrize(
    ("binding", "preview", "dev_rule", "expected"),
    [
        (ONLY_ID, None, False, "kv-id"),
        (ONLY_PREVIEW, None, False, "kv-preview"),
        (BOTH, None, False, "kv-id"),  # as `wrangler kv key get` (put refuses)
        (BOTH, True, False, "kv-preview"),
        (BOTH, False, False, "kv-id"),
        (NEITHER, None, False, "KV"),
        (BOTH, None, True, "kv-preview"),  # `wrangler dev`
        (BOTH, False, True, "kv-preview"),
        (ONLY_ID, None, True, "kv-id"),
        (NEITHER, None, True, "KV"),
    ],
)
def test_local_kv_id(
    binding: KvBinding, preview: bool | None, dev_rule: bool, expected: str
) -> None:
    assert local_kv_id(binding, preview=preview, dev_rule=dev_rule) == expected


def test_local_kv_id_refuses_an_id_that_is_not_set() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("KV binding 'KV' has no preview_id; drop --preview")
    ):
        local_kv_id(ONLY_ID, preview=True)
    with pytest.raises(ConfigError, match=re.escape("has only a preview_id; pass --preview")):
        local_kv_id(ONLY_PREVIEW, preview=False)


@pytest.mark.parametrize(
    ("binding", "expected"),
    [
        (D1Binding("DB", "db", "d1-id", "d1-preview"), "d1-preview"),
        (D1Binding("DB", "db", "d1-id"), "d1-id"),
        (D1Binding("DB", "db"), "DB"),
    ],
)
def test_local_d1_id(binding: D1Binding, expected: str) -> None:
    assert local_d1_id(binding) == expected


def test_persist_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "worker").mkdir()
    config = load_wrangler_config(write(tmp_path / "worker", "wrangler.toml", TOML), env=None)
    monkeypatch.chdir(tmp_path)

    assert persist_root(config, None) == tmp_path / "worker" / ".wrangler" / "state"
    assert persist_root(config, Path("state")) == tmp_path / "state"  # relative to cwd
    assert persist_root(config, tmp_path / "abs") == tmp_path / "abs"
