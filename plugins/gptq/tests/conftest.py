"""Fixtures for the quantization tests (helpers live in quant_ckpt.py)."""
import pytest


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("quant_models")
