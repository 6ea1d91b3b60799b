"""InferBench: which engine and precision is fastest for a model on this machine.

Importing this package is cheap: no inference engine is imported until a cell needs it.
"""

__version__ = "0.1.0"
