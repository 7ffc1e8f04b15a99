"""Configuration: the frozen model and the HCL loader that builds it.

Import the submodules directly: :mod:`snakeway.config.model` for the
immutable objects that runtime code receives, and :mod:`snakeway.config.load`
(:func:`~snakeway.config.load.load_config`) to read files. This package
re-exports nothing, so importing the model does not import the HCL parser.
"""
