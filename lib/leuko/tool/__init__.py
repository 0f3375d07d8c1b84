"""The tool a lab runs (``leuko classify``, ``score``, ``adapt``, export, the CLI) and the
stages that measure it (smear detection, adaptation curves). Imports every layer but
``leuko.reporting``."""
