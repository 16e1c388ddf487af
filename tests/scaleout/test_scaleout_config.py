"""Validation of the scale-out configs (no Ray needed)."""

from __future__ import annotations

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.scaleout.config import BatchConfig, ClusterConfig, ServeConfig


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"actors": 0}, "actors"),
        ({"cpus_per_actor": 0, "gpus_per_actor": 0}, "CPUs or GPUs"),
        ({"decode_cpus": 0}, "decode_cpus"),
        ({"batch_size": 0}, "batch_size"),
        ({"blocks_in_flight": 0}, "blocks_in_flight"),
    ],
)
def test_batch_config_rejects(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BatchConfig(**kwargs)


def test_cluster_config():
    assert ClusterConfig().address is None
    with pytest.raises(ConfigError, match="75 MiB|minimum"):
        ClusterConfig(object_store_mb=10)
    with pytest.raises(ConfigError, match="ray start"):
        ClusterConfig(address="auto", num_cpus=2)


def test_serve_config_autoscaling():
    assert ServeConfig().autoscaling is None
    auto = ServeConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=2)
    assert auto.autoscaling == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}
    with pytest.raises(ConfigError, match="both"):
        ServeConfig(max_replicas=3)
    with pytest.raises(ConfigError, match="min_replicas <= max_replicas"):
        ServeConfig(min_replicas=3, max_replicas=2)
    with pytest.raises(ConfigError, match="max_batch_size"):
        ServeConfig(max_batch_size=0)


def test_serve_config_from_toml(tmp_path):
    from pathlib import Path

    from drifa_edge.scaleout import config

    example = Path(config.__file__).with_name("ray_serve.example.toml")
    cfg = config.load_serve_config(example, port=9001)
    assert (cfg.replicas, cfg.max_batch_size, cfg.port) == (2, 8, 9001)
    bad = tmp_path / "bad.toml"
    bad.write_text("[ray_serve]\nreplica = 3\n")
    with pytest.raises(ConfigError, match="Did you mean 'replicas'"):
        config.load_serve_config(bad)


def test_score_refuses_bad_requests_before_starting_ray(tmp_path):
    """Usage errors surface at once, before any cluster is started (no Ray needed)."""
    from drifa_edge.inference.manifest import Case
    from drifa_edge.scaleout.batch import score_cases

    case = Case("a", {"derm": tmp_path / "a.png", "blood": tmp_path / "a.npy"})
    with pytest.raises(ConfigError, match="JSON Lines"):
        score_cases(tmp_path, [case], tmp_path / "out.csv")
    with pytest.raises(ConfigError, match="given twice"):
        score_cases(tmp_path, [case, case], tmp_path / "out.jsonl")
