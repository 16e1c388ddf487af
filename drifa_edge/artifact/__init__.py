"""What an artifact folder holds and how it is written (numpy only; torch is imported
only by :func:`~drifa_edge.artifact.checkpoint.load_checkpoint` / ``save_checkpoint``).

- :mod:`.card`: the model card (``model_card.json``): tasks, preprocessing, temperature and
  referral rule per task, sha256 of every file; its schema version is checked on load;
- :mod:`.checkpoint`: ``model.safetensors`` + card (``WEIGHTS_FILE``), save and load;
- :mod:`.layout`: the export folder: graphs (``GRAPHS``), precisions (``PRECISIONS``), build
  folders per runtime and precision, graph input names, integrity checks;
- :mod:`.ensemble`: ``ensemble.json`` and its member folders;
- :mod:`.builds`: the builds an artifact folder holds (runtime, precision, folder, target);
- :mod:`.atomic`: :func:`atomic_write`, the one way every writer replaces a file.

Exit codes are on the exception types in :mod:`drifa_edge.errors`.
"""

from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.artifact.card import (
    CARD_FILE,
    REFERRAL_METRICS,
    ModelCard,
    ReferralRule,
    read_card,
    write_card,
)
from drifa_edge.artifact.checkpoint import WEIGHTS_FILE
from drifa_edge.artifact.ensemble import ENSEMBLE_FILE, resolve_members
from drifa_edge.artifact.layout import GRAPHS, PRECISIONS

__all__ = [
    "CARD_FILE",
    "ENSEMBLE_FILE",
    "GRAPHS",
    "PRECISIONS",
    "REFERRAL_METRICS",
    "WEIGHTS_FILE",
    "ModelCard",
    "ReferralRule",
    "atomic_write",
    "read_card",
    "resolve_members",
    "write_card",
]
