"""Secrets: required outside local development, from the environment or a mounted file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartintel_assets import settings
from cartintel_assets.ingestion.ingest import pseudonymise


def test_the_pseudonym_key_is_required_outside_local_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARTINTEL_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("CARTINTEL_PSEUDONYM_KEY_FILE", raising=False)
    monkeypatch.delenv("CARTINTEL_ENV", raising=False)
    assert settings.pseudonym_key() == settings.LOCAL_PSEUDONYM_KEY  # local development
    monkeypatch.setenv("CARTINTEL_ENV", "production")
    with pytest.raises(settings.MissingSecretError) as err:
        settings.pseudonym_key()
    assert "CARTINTEL_PSEUDONYM_KEY is not set" in str(err.value)
    assert "CARTINTEL_ENV=production" in str(err.value)
    # a Compose or Kubernetes secret mounted as a file
    (tmp_path / "key").write_text("from-a-secret-file\n")
    monkeypatch.setenv("CARTINTEL_PSEUDONYM_KEY_FILE", str(tmp_path / "key"))
    assert settings.pseudonym_key() == "from-a-secret-file"
    (tmp_path / "key").write_text("\n")
    with pytest.raises(settings.MissingSecretError, match="is empty"):
        settings.pseudonym_key()
    monkeypatch.setenv("CARTINTEL_PSEUDONYM_KEY_FILE", str(tmp_path / "absent"))
    with pytest.raises(settings.MissingSecretError, match="cannot be read"):
        settings.pseudonym_key()
    monkeypatch.setenv("CARTINTEL_PSEUDONYM_KEY", "from-the-environment")
    assert settings.pseudonym_key() == "from-the-environment"
    # another key, other pseudonyms: rotating the key breaks the link to earlier pseudonyms
    a = pseudonymise(["C000042"], "from-the-environment")
    assert a != pseudonymise(["C000042"], settings.LOCAL_PSEUDONYM_KEY)
    assert a == pseudonymise(["C000042"], "from-the-environment")


def test_the_service_needs_its_tokens_outside_local_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cartintel_assets.serving.auth import SCOPES, token_variable
    from cartintel_assets.serving.config import ServiceSettings

    for scope in SCOPES:
        monkeypatch.delenv(token_variable(scope), raising=False)
        monkeypatch.delenv(f"{token_variable(scope)}_FILE", raising=False)
    monkeypatch.delenv("CARTINTEL_ENV", raising=False)
    assert not ServiceSettings.from_env().tokens.required  # local: open, on 127.0.0.1
    monkeypatch.setenv("CARTINTEL_ENV", "production")
    with pytest.raises(settings.MissingSecretError, match="CARTINTEL_SERVE_SCORE_TOKENS"):
        ServiceSettings.from_env()
    for scope in SCOPES:
        monkeypatch.setenv(token_variable(scope), f"{scope}-a, {scope}-b")
    tokens = ServiceSettings.from_env().tokens
    assert tokens.scopes_of("score-b") == {"score"} and tokens.scopes_of("nope") == set()
    assert "score-a" not in repr(tokens)  # only digests are kept


def test_the_receipt_key_is_required_before_anything_is_erased(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside local development an erasure without its receipt key stops at once, naming the
    variable, with every store untouched (a receipt nobody can verify is no receipt)."""
    from cartintel_assets.privacy.erasure import erase, receipt_key, sign
    from cartintel_assets.privacy.subject import Stores, Subject

    monkeypatch.delenv("CARTINTEL_RECEIPT_KEY", raising=False)
    monkeypatch.delenv("CARTINTEL_RECEIPT_KEY_FILE", raising=False)
    monkeypatch.setenv("CARTINTEL_ENV", "production")
    landing = tmp_path / "landing" / "2026-10-01"
    landing.mkdir(parents=True)
    (landing / "events.jsonl").write_text('{"session_id": "S1"}\n')
    stores = Stores(*(tmp_path / n for n in ("landing", "wh.duckdb", "r", "s", "m")))
    with pytest.raises(settings.MissingSecretError, match="CARTINTEL_RECEIPT_KEY is not set"):
        erase(stores, Subject(sessions={"S1"}), "test", store=None)
    assert (landing / "events.jsonl").read_text() == '{"session_id": "S1"}\n'
    assert not (tmp_path / "wh.duckdb").exists()
    monkeypatch.setenv("CARTINTEL_RECEIPT_KEY", "k1")
    assert sign({"a": 1}, receipt_key()) != sign({"a": 1}, "k2")
