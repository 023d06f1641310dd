"""The Ray Serve tests start a local Ray cluster; ``pytest -m "not ray"`` skips them."""
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "test_ray_serve" in item.nodeid:
            item.add_marker(pytest.mark.ray)
