"""The 4-class thesis study: its stages as functions, evaluation, and the cost of a preset.
Imports ``leuko.core`` and ``leuko.models``."""
