"""`python -m wdlib.snapshot export --params FILE --out PATH [--limit N]` | `python -m wdlib.snapshot info PATH`."""

import sys

from wdlib.snapshot.export import main

sys.exit(main())
