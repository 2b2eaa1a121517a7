"""Point the real-model tests at the artefacts `make setup` built, instead of rebuilding them."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_ARTIFACTS = ROOT / "var" / "artifacts.json"

if _ARTIFACTS.exists():
    _art = json.loads(_ARTIFACTS.read_text())
    if _art.get("model_dir"):
        os.environ.setdefault("HC_MODEL_DIR", _art["model_dir"])
    if _art.get("index_dir"):
        os.environ.setdefault("HC_INDEX_DIR", _art["index_dir"])
# Tests never write into the working copy's var/hc.db.
os.environ.setdefault("HC_DATABASE_URL", f"sqlite:///{tempfile.mkdtemp(prefix='hc-test-')}/hc.db")
# A fixed data key (core/sealing.py) so tests never write a key file into the working copy.
os.environ.setdefault("HC_DATA_KEY", "dGVzdC1kYXRhLWtleS10ZXN0LWRhdGEta2V5LTMyYj0=")
# Rate limits (api/ratelimit.py) off for the suite: tests drive hundreds of requests from one
# address and one conversation, in-process and through the stacks they start (which inherit this).
# tests/test_ratelimit.py and tools.fuzz turn them on explicitly.
os.environ.setdefault("HC_RATE_LIMIT_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The browser tests' shared fixtures (one real stack per session, Chromium per module).
from tests._browser_fixtures import browser, new_context, web_stack  # noqa: E402,F401
