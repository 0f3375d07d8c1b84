"""The DVC pipeline's own tools: each stage's code deps, measured stage times, presets, the
data pull. Imports ``leuko.core`` and ``leuko.models``."""
