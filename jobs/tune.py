"""``ray job submit --entrypoint-resources '{"tune_driver": 1}' -- python jobs/tune.py --config FILE [--set k=v ...]``: the same code path as ``xmw tune``."""

import sys

from xmw_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
