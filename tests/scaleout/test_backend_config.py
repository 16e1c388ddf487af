"""`backend = "ray"` without a cluster: the [inference.ray] config and the retry/timeout rule of
a deployment call (stand-in responses: the real calls are in test_serve_backend.py)."""

from __future__ import annotations

import pytest

from drifa_edge.errors import ConfigError, DrifaError
from drifa_edge.serve.config import ServeConfig


def test_inference_ray_table():
    cfg = ServeConfig.from_dict(
        {
            "inference": {
                "backend": "ray",
                "ray": {"address": "auto", "deploy": False, "deployment": {"replicas": 3}},
            }
        }
    )
    assert cfg.inference.ray.deployment.replicas == 3 and cfg.inference.ray.cluster().address == "auto"
    with pytest.raises(ConfigError, match="Did you mean 'ray'"):
        ServeConfig.from_dict({"inference": {"backend": "rey"}})
    with pytest.raises(ConfigError, match=r"\[inference.ray\] address 'auto' joins an existing cluster"):
        ServeConfig.from_dict({"inference": {"ray": {"address": "auto", "num_cpus": 2}}})
    with pytest.raises(ConfigError, match=r"unknown setting 'replica' in \[inference.ray.deployment\]"):
        ServeConfig.from_dict({"inference": {"ray": {"deployment": {"replica": 2}}}})
    with pytest.raises(ConfigError, match="timeout_s must be > 0"):
        ServeConfig.from_dict({"inference": {"ray": {"timeout_s": 0}}})


class Response:
    """A stand-in DeploymentResponse: raises the queued errors, then answers."""

    def __init__(self, outcomes: list) -> None:
        self.outcomes = outcomes
        self.timeouts: list = []

    def result(self, timeout_s=None):
        self.timeouts.append(timeout_s)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_call_with_retry_resends_after_a_dead_replica_and_times_out_clearly():
    pytest.importorskip("ray")
    from ray.exceptions import ActorDiedError

    from drifa_edge.scaleout.serve import call_with_retry

    first = Response([ActorDiedError()])
    again = Response([{"case_id": "c1"}])
    assert call_with_retry(lambda: again, "c1", attempts=2, first=first, timeout_s=5) == {"case_id": "c1"}
    assert first.timeouts == [5] and again.timeouts == [5]
    with pytest.raises(ActorDiedError):  # the last error, never swallowed
        call_with_retry(lambda: Response([ActorDiedError()]), "c1", attempts=2)
    with pytest.raises(DrifaError, match="case c2: no answer from Ray Serve within 5 s"):
        call_with_retry(lambda: Response([TimeoutError()]), "c2", attempts=3, timeout_s=5)
