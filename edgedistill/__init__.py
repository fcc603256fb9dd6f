"""edgedistill: cheap-convolution students trained by online distillation, exported and benchmarked on edge devices."""

__version__ = "0.1.0"
