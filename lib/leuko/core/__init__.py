"""The ground floor: images, manifests and splits, crops and stain, the input pipeline, metrics
and the one scoring of a labelled set, calibration, figures, parameters, atomic writes, the
machine, progress. Imports nothing else of ``leuko``."""
