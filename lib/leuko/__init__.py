"""leuko: the shared code of the leukocyte study (data, models, training, evaluation, CLI)."""

__version__ = "0.1.0"
