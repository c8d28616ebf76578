"""The payment provider the settings ask for. Only the sandbox exists so far: a test
processor whose ledger lives in the data dir, shared by every process on this machine."""

from __future__ import annotations

from pathlib import Path

from actors.payments.sandbox import SandboxProvider, SqliteLedger
from feira.settings import Settings

SANDBOX_LEDGER_FILE = "payments-sandbox.db"


def open_sandbox(settings: Settings) -> tuple[SandboxProvider, SqliteLedger]:
    ledger = SqliteLedger(Path(settings.data_dir) / SANDBOX_LEDGER_FILE)
    return SandboxProvider(ledger), ledger
