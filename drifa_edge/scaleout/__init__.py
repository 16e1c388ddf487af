"""Scale-out on Ray: batch scoring with Ray Data and online serving with Ray Serve.

Ray is an optional extra (``pip install 'drifa-edge[ray]'``); every module here
imports it inside the functions that need it, so importing this package on an
edge install without Ray works and only running something raises
:class:`~drifa_edge.errors.MissingDependencyError`.

The inference itself is not re-implemented: decoding and preprocessing are the
local ``predict``'s ``prepare_case`` and the MC engine, uncertainty, referral and
record schema are its ``Predictor`` (see :mod:`drifa_edge.scaleout.adapter`).
Ray only decides where each piece runs.

Modules: ``batch`` (``drifa-edge score``, Ray Data), ``serve`` (``drifa-edge serve-ray``, the Ray
Serve deployment), ``backend`` (``drifa-edge serve`` with ``backend = "ray"``: the local DICOM
front sending prepared cases to that deployment), ``cluster`` (connecting), ``config``, ``uris``
(``pyarrow.fs`` inputs), ``adapter`` (the one seam to the local prediction code).
"""
