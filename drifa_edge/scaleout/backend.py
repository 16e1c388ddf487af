"""``drifa-edge serve`` with ``backend = "ray"``: one DICOM front, inference on Ray Serve.

The service keeps everything that holds state on its own machine (receiver, store, case
assembly, results, outbox) and hands only inference to a Ray Serve deployment, through
:class:`RayPredictor`, which has the face of a local ``Predictor`` (``card``, ``sha256``,
``runtime``, ``device``, ``ensemble_size``, ``predict(cases)``, ``close()``), so the
service's worker, its crash safety (a case is DONE only once its record is stored) and its
records do not change.

Each case is decoded and preprocessed here, beside the store (``prepare_case``, the same
call local ``predict`` makes: the record's paths, read provenance and error messages name
the stored files), and the prepared arrays go to the deployment's ``predict_prepared``; the
cases of a micro-batch are sent together, so Serve's ``@serve.batch`` runs them as one
engine call on a replica (or spreads them over several). A request whose replica died is
sent again (inference is idempotent: same case, same seed, same record); when every
attempt fails, ``predict`` raises and the worker marks the batch ``inference_error``, as
for a local runtime failure. Records carry ``worker`` (the replica's pid, host, Ray node
and actor ids and how many cases shared its engine call) beside local predict's fields.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drifa_edge.errors import ConfigError
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.scaleout.config import ClusterConfig, ServeConfig

log = logging.getLogger(__name__)

# settings the front and the deployment must agree on (predictor.run_settings)
AGREED = ("model_sha256", "runtime", "precision", "samples", "seed_policy", "ensemble_size")


class RayPredictor:
    """Predict-record maker backed by a Ray Serve deployment (see the module doc)."""

    def __init__(
        self, handle, artifact: Path, info: dict[str, Any], engine_cfg: EngineConfig, owned: dict[str, Any],
        allow_conversion: bool = False, attempts: int = 3, timeout_s: float | None = None,
    ) -> None:  # fmt: skip
        from drifa_edge.scaleout.adapter import model_card

        self.handle = handle
        self.artifact = artifact
        self.card = model_card(artifact)
        self.info = info
        self.engine_cfg = engine_cfg
        self.runtime: str = info["runtime"]
        self.sha256: str = info["model_sha256"]
        self.device: str = f"{info['device']} (Ray Serve)"
        self.ensemble_size: int = info["ensemble_size"]
        self.allow_conversion = allow_conversion
        self.attempts = attempts
        self.timeout_s = timeout_s
        self._owned = owned  # what close() undoes: {"app": name or None, "ray": bool}

    @classmethod
    def open(
        cls,
        artifact: str | Path,
        runtime: str = "auto",
        options: RuntimeOptions | None = None,
        engine_cfg: EngineConfig | None = None,
        allow_conversion: bool = False,
        *,
        cluster: ClusterConfig | None = None,
        deployment: ServeConfig | None = None,
        deploy: bool = True,
        app_name: str = "drifa-edge",
        attempts: int = 3,
        timeout_s: float | None = None,
    ) -> RayPredictor:
        """Connect to Ray (``cluster``; a local one when its address is None) and deploy the
        artifact as ``app_name`` (``deploy``) or use the application running under that name.
        A case gets ``attempts`` sends while replicas die, and ``timeout_s`` seconds for each.

        Raises ConfigError when the running application is missing or runs another model or
        other settings than asked (named); MissingDependencyError without the [ray] extra."""
        from drifa_edge.scaleout.adapter import model_card
        from drifa_edge.scaleout.cluster import connect, import_ray
        from drifa_edge.scaleout.serve import deploy as deploy_app

        artifact = Path(artifact).resolve()
        options = options or RuntimeOptions()
        engine_cfg = engine_cfg or EngineConfig()
        model_card(artifact)  # a bad artifact fails before Ray starts
        ray = import_ray()
        started = connect(cluster)
        owned: dict[str, Any] = {"app": None, "ray": started}
        try:
            from ray import serve

            if deploy:
                handle = deploy_app(
                    artifact, runtime, options, engine_cfg, deployment or ServeConfig(), http=False,
                    app_name=app_name,
                )  # fmt: skip
                owned["app"] = app_name
            else:
                try:
                    handle = serve.get_app_handle(app_name)
                except Exception as e:  # RayServeException: no controller or no such app
                    raise ConfigError(
                        f"[inference.ray] no Ray Serve application {app_name!r} on the cluster at "
                        f"{(cluster or ClusterConfig()).address!r} ({e}); start it with drifa-edge serve-ray "
                        "or set deploy = true"
                    ) from e
            info = handle.info.remote().result(timeout_s=timeout_s)
            predictor = cls(handle, artifact, info, engine_cfg, owned, allow_conversion, attempts, timeout_s)
            if not deploy:
                predictor.check_agrees(runtime, options, engine_cfg)
            return predictor
        except BaseException:
            _release(owned, ray)
            raise

    def check_agrees(self, runtime: str, options: RuntimeOptions, engine_cfg: EngineConfig) -> None:
        """Refuse a running application whose settings differ from this service's (named)."""
        from drifa_edge.inference.writers import ensemble_sha256, model_sha256
        from drifa_edge.scaleout.adapter import choose_runtime, member_cards

        cards = member_cards(self.artifact)
        want = {
            "model_sha256": model_sha256(cards[0]) if len(cards) == 1 else ensemble_sha256(cards),
            "runtime": choose_runtime(self.artifact, runtime, options.precision),
            "precision": options.precision,
            "samples": engine_cfg.samples,
            "seed": engine_cfg.seed,
        }
        have = {**{k: self.info.get(k) for k in AGREED}, "seed": self.info.get("seed")}
        differ = [f"{k}: service {want[k]!r}, application {have[k]!r}" for k in want if want[k] != have[k]]
        if differ:
            raise ConfigError(
                "[inference.ray] the running Ray Serve application does not run what this service's "
                f"[inference] asks for ({'; '.join(differ)}); redeploy it (drifa-edge serve-ray with the "
                "same artifact and settings) or set deploy = true"
            )

    # ---------------------------------------------------------------- Predictor's face

    def prepare(self, case: Case):
        from drifa_edge.scaleout.adapter import prepare_case

        return prepare_case(case, self.card, self.allow_conversion)

    def predict(self, cases: Sequence[Case]) -> list[dict[str, Any]]:
        """One record per case, in order. Every case goes to the deployment, all at once (Serve
        batches them); a case that could not be read costs no engine call there and comes back
        as local predict's error record. Raises when a request failed on every attempt (the
        cluster is gone, the application was deleted): nothing is made up."""
        from drifa_edge.scaleout.serve import call_with_retry

        prepared = [self.prepare(case) for case in cases]
        sent = [self.handle.predict_prepared.remote(item) for item in prepared]
        return [
            call_with_retry(
                lambda item=item: self.handle.predict_prepared.remote(item),
                item.case.case_id,
                self.attempts,
                first=response,
                timeout_s=self.timeout_s,
            )
            for item, response in zip(prepared, sent, strict=True)
        ]

    def close(self) -> None:
        import ray

        _release(self._owned, ray)


def _release(owned: dict[str, Any], ray) -> None:
    """Delete the application this service deployed, and shut down the Ray it started."""
    if owned.get("app") and ray.is_initialized():
        from ray import serve

        try:
            serve.delete(owned["app"])
        except Exception:  # the cluster may be gone already; nothing of ours is left to keep
            log.warning("could not delete the Ray Serve application %r", owned["app"], exc_info=True)
        owned["app"] = None
    if owned.get("ray") and ray.is_initialized():
        ray.shutdown()
        owned["ray"] = False
