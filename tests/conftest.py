import json
from pathlib import Path

import pytest

MODELS = Path(__file__).parent / "models"


@pytest.fixture
def write_config(tmp_path):
    """Write a transformers config.json into a fresh folder and return the folder."""
    def write(name: str, **fields) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(fields))
        return folder
    return write
