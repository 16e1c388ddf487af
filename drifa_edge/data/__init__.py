"""drifa-edge data: from files on disk to paired, preprocessed model input.

The data flows one way (numpy + PIL only; tifffile/pydicom are imported when a file needs them):

- ``readers``    one file -> (H, W, C) float32 in [0, 1]: PNG/JPEG/BMP/TIFF (8/16 bit), NPY, DICOM;
                 size limits, no pickles, :class:`~drifa_edge.errors.BadInputError` naming the file.
- ``preprocess`` image -> (C, S, S) model input exactly as the model card's ``PreprocessSpec`` says;
                 the one function every runtime, the calibration set and training share.
- ``sources``    one task's labelled set (class folders, optionally under train/val/test folders,
                 ``labels.csv``, MedMNIST ``.npz``) with seeded stratified splits and a content
                 fingerprint for the model card; ``--data NAME=PATH`` parsing; ``load_eval_arrays``.
- ``splits``     split-name aliases and the seeded, stratified (case-grouped) split.
- ``pairing``    multimodal rows: the authors' index pairing (resampled to the longest set,
                 reshuffled per epoch) or an inner join on case id.
- ``synthetic``  a built-in, deterministic 2-4 task image set for demos and tests.
"""
