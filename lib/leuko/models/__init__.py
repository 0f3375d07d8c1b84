"""The one registry of networks and how they train: imports ``leuko.core`` only."""
