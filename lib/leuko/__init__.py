"""leuko: the shared code of the leukocyte study (data, models, training, evaluation, CLI).

Importing the package keeps TensorFlow's CUDA start-up lines off stderr on a machine without a
GPU (``leuko.core.tf_startup``): the CLI, the stage notebooks and their rendered reports show only
what is meant for people. It must therefore be imported before TensorFlow is.
"""

from leuko.core.tf_startup import quiet_tensorflow_start_up

__version__ = "0.1.0"

quiet_tensorflow_start_up()
