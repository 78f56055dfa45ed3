"""``ray job submit --entrypoint-resources '{"tune_driver": 1}' -- python jobs/infer.py --checkpoint CKPT --grid STORE --years Y0-Y1 --out MAPS [...]``: the same
code path as ``xmw infer``."""

import sys

from xmw_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
