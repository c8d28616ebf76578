"""`feira token`, `feira keys` and `feira api-key` on the embedded stores (no Ray)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from actors.identity.tokens import Role
from feira.cli import main
from feira.settings import Settings
from feira.signing_secrets import token_service


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEIRA_DATA_DIR", str(tmp_path))
    return tmp_path


def test_token_verifies_with_the_deployments_keys(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--role", "logistics", "--subject", "dhl", "--ttl", "600"]) == 0
    token = capsys.readouterr().out.strip()
    claims = token_service(Settings(data_dir=data_dir)).verify_access(token)
    assert (claims.role, claims.subject) == (Role.LOGISTICS, "dhl")
    assert claims.scopes == {"shipments:read", "shipments:write"}
    with pytest.raises(SystemExit):
        main(["token", "--role", "admin", "--subject", "ops", "--ttl", "7200"])


def test_keys_rotate_keeps_old_tokens_valid(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["token", "--role", "merchant", "--subject", "m-001"])
    before = capsys.readouterr().out.strip()
    assert main(["keys", "rotate"]) == 0
    jwks = orjson.loads(capsys.readouterr().out)
    assert len(jwks["keys"]) == 2
    assert token_service(Settings(data_dir=data_dir)).verify_access(before).subject == "m-001"


def test_api_key_create_list_revoke(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["api-key", "create", "--role", "admin", "--subject", "ops", "--plan", "internal"]
    assert main(args) == 0
    plaintext = capsys.readouterr().out.strip()
    assert plaintext.startswith("fk_")
    key_id = plaintext.split("_")[1]
    main(["api-key", "list"])
    listed = capsys.readouterr().out
    assert key_id in listed
    assert "active" in listed
    assert plaintext not in listed
    assert main(["api-key", "revoke", "--key-id", key_id]) == 0
    main(["api-key", "list"])
    assert "revoked" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown plan"):
        main(["api-key", "create", "--plan", "gold"])
    with pytest.raises(SystemExit, match="api_key_not_found"):
        main(["api-key", "revoke", "--key-id", "nosuchkey123"])
