"""``python -m converters.caffe`` is ``convert-caffe``."""

import sys

from converters.caffe.cli import main

sys.exit(main())
