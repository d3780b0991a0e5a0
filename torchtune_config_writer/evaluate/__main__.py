"""``python -m torchtune_config_writer.evaluate [--report REPORT.json] [--force] CONFIG.yaml ...`` (see ``program``)."""

import sys

from .program import main

if __name__ == "__main__":
    sys.exit(main())
