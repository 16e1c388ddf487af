"""`drifa-edge serve`: the always-on service beside a scanner or PACS node.

DICOM in (C-STORE SCP, watch folder, local HTTP API) -> durable case store (SQLite WAL)
-> case assembly (series -> task rules, quiet period) -> inference worker (the same
records as ``predict``) -> JSON record + DICOM SR -> outbox -> PACS. Nothing is
acknowledged before it is on disk and in the store. Modules: ``config`` (TOML),
``store`` (states), ``ingest`` (validate + atomic write, shared by every way in),
``receiver`` (pynetdicom), ``assembly``, ``worker``, ``inference`` (the adapter to
the predictor), ``http``, ``watch``, ``retention``, ``audit``, ``crash`` (test hook),
``service`` (wires them together).
"""
