"""``ray job submit --entrypoint-resources '{"tune_driver": 1}' -- python jobs/transfer.py --config FILE [--set k=v ...]``: the same code path as ``xmw transfer``."""

import sys

from xmw_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["transfer", *sys.argv[1:]]))
