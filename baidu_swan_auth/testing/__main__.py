"""``python -m baidu_swan_auth.testing``: serve the fake in the foreground (see ``main``)."""

import sys

from baidu_swan_auth.testing import main

sys.exit(main())
