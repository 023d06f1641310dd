"""The Serve application's limits, built without a cluster."""
import pytest

pytest.importorskip("ray")

from litevllm_ray import launch  # noqa: E402


@pytest.mark.parametrize("scale, replicas", [({}, 2), ({"min_replicas": 1, "max_replicas": 4}, 4)])
def test_ingress_passes_on_what_the_replicas_hold(monkeypatch, scale, replicas):
    """Streams stay open for their whole length, so the ingress must let through all that the
    replicas run and queue (Ray Serve's default max_ongoing_requests of 5 queued the rest at
    the proxy: 2.4k instead of 26k output tok/s on an H200)."""
    monkeypatch.setattr(launch, "placement", lambda *a: {"num_cpus": 1})
    kw = dict(shutdown_timeout=5, replicas=2, min_replicas=None, max_replicas=None,
              gpus_per_replica=None, cpus_per_replica=1, max_waiting=None)
    app = launch.build({"max_num_seqs": 64}, None, **{**kw, **scale})
    ingress = app._bound_deployment
    engines = ingress.init_args[0]._bound_deployment
    assert engines.max_ongoing_requests == 128                      # 64 running + 64 waiting
    assert ingress.max_ongoing_requests == replicas * 128


def test_port_zero_needs_the_local_cluster():
    """A free port found on this machine says nothing about the cluster's nodes."""
    with pytest.raises(ValueError, match="--port 0 needs the local cluster"):
        launch.serve_replicas({}, None, "127.0.0.1", 0, ray_address="auto", shutdown_timeout=1)
