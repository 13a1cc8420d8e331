"""``python -m hil_tests`` is ``python -m hil_tests.sim``: start simulated meters."""

import sys

from hil_tests.sim import main

sys.exit(main())
