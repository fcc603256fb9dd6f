"""``python -m edgedistill.bench.rpc tracker ...``"""

import sys

from edgedistill.bench.rpc.tracker_server import main

sys.exit(main())
