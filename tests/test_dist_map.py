"""The start-up's stored ``packages_distributions()`` map (formats/dist_map.py): the map Python
builds, served from the file while sys.path is unchanged, rebuilt when it changes."""
import importlib.metadata
import json
import sys

from litevllm.formats import dist_map


def test_map_is_stored_reused_and_rebuilt_when_sys_path_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEVLLM_CACHE", str(tmp_path / "cache"))
    builds = []

    def build():
        builds.append(1)
        return importlib.metadata.packages_distributions()

    real = importlib.metadata.packages_distributions()
    assert dist_map.packages_distributions(build) == real and len(builds) == 1
    assert json.loads(dist_map.cache_file().read_text())["map"] == real
    assert dist_map.packages_distributions(build) == real and len(builds) == 1  # from the file
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", sys.path + [str(site)])
    dist_map.packages_distributions(build)
    assert len(builds) == 2  # a new directory on sys.path
    (site / "new_pkg-1.0.dist-info").mkdir()  # an install modifies its directory
    dist_map.packages_distributions(build)
    dist_map.packages_distributions(build)
    assert len(builds) == 3


def test_a_broken_file_is_rebuilt_and_the_patch_is_scoped(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEVLLM_CACHE", str(tmp_path))
    dist_map.cache_file().write_text("{not json")
    real_fn = importlib.metadata.packages_distributions
    with dist_map.cached_packages_distributions():
        assert importlib.metadata.packages_distributions() == real_fn()
    assert importlib.metadata.packages_distributions is real_fn
    assert "state" in json.loads(dist_map.cache_file().read_text())
