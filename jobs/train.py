"""``ray job submit --entrypoint-resources '{"tune_driver": 1}' -- python jobs/train.py --config FILE [--set k=v ...]``: the same code path as ``xmw train``."""

import sys

from xmw_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
