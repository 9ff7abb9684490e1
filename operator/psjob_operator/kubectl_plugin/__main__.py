"""`python -m psjob_operator.kubectl_plugin`: the plugin without its console script."""

import sys

from psjob_operator.kubectl_plugin.cli import main

sys.exit(main())
