"""spark-submit entry point of `clickrec ingest`: raw clickstream/ratings files -> bronze -> silver.

`spark-submit jobs/ingest.py --input PATH [--format rees46|ratings] [--config FILE]` is the same
as `clickrec ingest ...`: it prepends the subcommand and calls the CLI.
"""

import sys

from clickrec.cli import main

if __name__ == "__main__":
    main(["ingest", *sys.argv[1:]])
