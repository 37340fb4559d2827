"""``python -m resnet_port.converters.caffe`` is ``convert-caffe``."""

import sys

from resnet_port.converters.caffe.cli import main

sys.exit(main())
