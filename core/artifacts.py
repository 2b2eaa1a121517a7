"""Where tools/setup.py put the built artefacts (model, index, Rasa model, venvs)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings


@dataclass(frozen=True)
class Artifacts:
    model_dir: Path | None
    index_dir: Path | None
    rasa_model: Path | None
    rasa_venv: Path | None


def load_artifacts(settings: Settings) -> Artifacts:
    path = settings.var_dir / "artifacts.json"
    data = json.loads(path.read_text()) if path.exists() else {}

    def pick(override: Path | None, key: str) -> Path | None:
        if override:
            return Path(override)
        return Path(data[key]) if data.get(key) else None

    return Artifacts(
        model_dir=pick(settings.model_dir, "model_dir"),
        index_dir=pick(settings.index_dir, "index_dir"),
        rasa_model=pick(None, "rasa_model"),
        rasa_venv=pick(None, "rasa_venv"),
    )
