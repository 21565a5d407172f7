from __future__ import annotations

import pytest

from bot.config import Settings


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token")
    monkeypatch.setenv("ATELIER_MODELS", "a=tiny, b=tiny-xl")
    monkeypatch.setenv("ATELIER_DEV_GUILD_ID", "")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "d"))
    s = Settings()
    assert s.model_sources() == [("a", "tiny"), ("b", "tiny-xl")]
    assert s.dev_guild_id is None
    assert s.token() == "secret-token"
    # The token never shows in reprs (and so never in logs).
    assert "secret-token" not in repr(s)


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DISCORD_TOKEN", "ATELIER_MODEL", "ATELIER_MODELS"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.model_sources() == [("tiny", "tiny")]
    with pytest.raises(SystemExit):
        s.token()


def test_torch_threads_must_be_positive(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from pydantic import ValidationError

    monkeypatch.chdir(tmp_path)
    assert Settings(ATELIER_TORCH_THREADS="3").torch_threads == 3  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(ATELIER_TORCH_THREADS="0")  # type: ignore[call-arg]


def test_previews_are_made_at_the_edit_rate(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from bot.delivery import EDIT_INTERVAL_S

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATELIER_PREVIEW_INTERVAL", raising=False)
    # More previews than edits would be made on the render's time and never shown.
    assert Settings().preview_interval == EDIT_INTERVAL_S
