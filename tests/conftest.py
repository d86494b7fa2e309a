"""Test configuration: offline settings for the whole session and the fixture modules of tests/fixtures/."""

from __future__ import annotations

import pytest

pytest_plugins = ["fixtures.gz10", "fixtures.finetune", "fixtures.demo", "fixtures.zenodo_server"]

# Tests never reach the network: the Hub is unreachable here and would only add retries. Set before collection
# (huggingface_hub reads HF_HUB_OFFLINE when it is first imported) and undone when the session ends.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}
_session_env = pytest.MonkeyPatch()


def pytest_configure(config):
    import os

    for key, value in OFFLINE_ENV.items():
        if key not in os.environ:
            _session_env.setenv(key, value)


def pytest_unconfigure(config):
    _session_env.undo()
