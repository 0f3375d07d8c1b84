"""The cell classifier for other labs: one cell geometry, two sources, the third lab, the
distance warning, ensembles, leave-one-source-out. Imports the layers below it (core,
models, thesis), never ``leuko.leukemia``."""
