"""``import taskloom`` must stay light: no plugin module, no provider SDK, no jinja2 or pluggy.

Checked in a fresh interpreter, since this test session has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Imported only when a lookup, a template or a provider needs them.
FORBIDDEN = ("openai", "anthropic", "llama_cpp", "huggingface_hub", "jinja2", "pluggy")

PROBE = """
import json, sys
before = set(sys.modules)
import taskloom
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _modules_imported_by_import_taskloom() -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    modules: list[str] = json.loads(result.stdout)
    return modules


def test_import_taskloom_loads_no_plugin_sdk_jinja2_or_pluggy() -> None:
    imported = _modules_imported_by_import_taskloom()
    assert "taskloom" in imported
    plugins = [m for m in imported if m.startswith("taskloom_")]
    assert plugins == [], f"import taskloom imported plugin modules: {plugins}"
    heavy = [m for m in imported if m.split(".")[0] in FORBIDDEN]
    assert heavy == [], f"import taskloom imported {heavy}"
