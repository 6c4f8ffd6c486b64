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


#: The longest test files, run first: with ``--dist loadfile`` each file
#: runs on one worker, and a long one started last keeps the run waiting
#: after every other worker is done.
LONGEST_FIRST = ("realcode/test_published.py", "test_docs.py", "test_recurrent.py",
                 "test_state_spaces.py", "test_chunk_bounds.py", "test_data_dependent.py",
                 "test_training.py", "test_models_real.py", "realcode/test_published_blocks.py",
                 "test_fits_search.py", "realcode/test_configs.py",
                 "realcode/test_published_summaries.py", "test_loop_time.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)),
                    len(LONGEST_FIRST))
    items.sort(key=rank)  # stable: the order within a file, and of the rest, is kept
