"""Checkpoints: ``model.safetensors`` + ``model_card.json``. No pickle anywhere."""

from __future__ import annotations

from pathlib import Path

from drifa_edge.artifact.atomic import atomic_replace, temporary_path
from drifa_edge.artifact.card import ModelCard, package_versions, read_card, write_card
from drifa_edge.errors import ArtifactError, missing_dependency

WEIGHTS_FILE = "model.safetensors"


def save_checkpoint(model, card: ModelCard, folder: str | Path) -> ModelCard:
    """Write the weights (safetensors) and the card with the weights' sha256."""
    try:
        from safetensors.torch import save_file
    except ImportError as e:
        raise missing_dependency("safetensors", "torch") from e
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = temporary_path(folder / WEIGHTS_FILE)
    save_file(state, str(tmp), metadata={"format": "pt", "producer": "drifa-edge"})
    atomic_replace(tmp, folder / WEIGHTS_FILE)
    card = card.replace(versions=package_versions())
    return write_card(card, folder, hash_files=[WEIGHTS_FILE])


def load_checkpoint(folder: str | Path, verify: bool = True):
    """Build the model from the card and load the weights; refuses a tampered file."""
    try:
        from safetensors.torch import load_file

        from drifa_edge.model.drifa import build_model
    except ImportError as e:
        raise missing_dependency("torch", "torch") from e
    folder = Path(folder)
    card = read_card(folder, verify=verify)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(
            f"{folder}: no {WEIGHTS_FILE}; the torch runtime needs a checkpoint folder "
            "(use --runtime onnxruntime or openvino for an export folder)"
        )
    model = build_model(card.model)
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(
            f"{weights}: weights do not fit the card's architecture "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    model.eval()
    return model, card
