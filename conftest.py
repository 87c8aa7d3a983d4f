"""Fixtures shared by every test folder of the repo: one real llama.cpp server for the whole run.

Defined once here (not in each plugin's conftest) so a full ``make test`` starts one server, not
one per folder that uses it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))

from llama_server_fixture import llama_server  # noqa: F401
