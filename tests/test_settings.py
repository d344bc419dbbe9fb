"""Settings from the environment: the original document's names, the database in the URI, and the
checks that keep a development configuration off the network."""
from __future__ import annotations

import base64

import pytest

from jobs.settings import Settings, UnsafeExposure, check_exposure, exposure_problems, is_loopback

PRODUCTION = {"JWT_SECRET_KEY": "s" * 48, "WEBHOOK_SECRET": "w" * 48,
              "UPLOAD_ENCRYPTION_KEY": base64.b64encode(bytes(range(32))).decode()}


def test_jwt_secret_is_read_as_the_original_document_names_it() -> None:
    assert Settings.from_env(environ={"JWT_SECRET": "from-the-contract"}).jwt_secret_key == "from-the-contract"
    both = Settings.from_env(environ={"JWT_SECRET": "alias", "JWT_SECRET_KEY": "ours"})
    assert both.jwt_secret_key == "ours"  # the documented name wins when both are set


@pytest.mark.parametrize("environ,expected", [
    ({"MONGODB_URI": "mongodb://db.internal:27017/sace_io"}, "sace_io"),
    ({"MONGODB_URI": "mongodb://u:p@db1,db2/avatars_prod?replicaSet=rs0"}, "avatars_prod"),
    ({"MONGODB_URI": "mongodb://db.internal:27017/?retryWrites=false"}, "avatar"),
    ({"MONGODB_URI": "mongodb://db.internal/sace_io", "MONGODB_DB": "explicit"}, "explicit"),
    ({}, "avatar"),
])
def test_the_database_is_mongodb_db_else_the_uris_else_avatar(environ: dict[str, str], expected: str) -> None:
    assert Settings.from_env(environ=environ).database_name == expected


def test_the_default_host_is_loopback() -> None:
    assert is_loopback(Settings().host)


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                           ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False),
                                           ("10.0.0.5", False), ("api.example.com", False)])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_host_with_development_secrets_is_refused_with_how_to_fix_it() -> None:
    exposed = Settings.from_env(environ={"HOST": "0.0.0.0"})
    with pytest.raises(UnsafeExposure) as refused:
        check_exposure(exposed)
    message = str(refused.value)
    for name in ("JWT_SECRET_KEY", "WEBHOOK_SECRET", "UPLOAD_ENCRYPTION_KEY"):
        assert name in message
    assert "0.0.0.0" in message and "127.0.0.1" in message
    check_exposure(Settings())  # loopback: a laptop needs none of them


@pytest.mark.parametrize("missing", sorted(PRODUCTION))
def test_each_development_secret_alone_blocks_exposure(missing: str) -> None:
    environ = {**{k: v for k, v in PRODUCTION.items() if k != missing}, "HOST": "0.0.0.0"}
    problems = exposure_problems(Settings.from_env(environ=environ))
    assert len(problems) == 1 and problems[0].startswith(missing)


def test_production_secrets_may_listen_anywhere() -> None:
    check_exposure(Settings.from_env(environ={**PRODUCTION, "HOST": "0.0.0.0"}))


def test_cors_origins_are_a_comma_separated_list_and_none_by_default() -> None:
    assert Settings().cors_origins == []
    settings = Settings.from_env(environ={"CORS_ALLOWED_ORIGINS": " https://a.example , http://localhost:5173,"})
    assert settings.cors_origins == ["https://a.example", "http://localhost:5173"]
