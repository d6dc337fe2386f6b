"""`python -m studio.cli ...`: how the UI's job queue and the distributed launcher start `studio` commands."""

import sys

from studio.cli import main

sys.exit(main())
