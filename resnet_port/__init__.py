"""resnet-port: port the classic ImageNet ResNets onto one reference PyTorch ResNet and prove it.

This package holds what every part of the toolkit shares: the version, the error types the
command-line tools map to exit codes, and the CLI plumbing.  The model lives in `resnet_ref`,
the file format in `checkpoints`, the converters in `converters`, evaluation in `validation`.
"""

__version__ = "0.1.0"
