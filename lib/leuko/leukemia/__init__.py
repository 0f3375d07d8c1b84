"""The leukemia study (ALL blast vs healthy cell, the C-NMC 2019 recipe). Imports the layers
below it (core, models, thesis), never ``leuko.cells``."""
