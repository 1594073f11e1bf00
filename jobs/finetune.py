"""`ray job submit -- python jobs/finetune.py ARGS`: the `openmed-ray finetune` verb as a job."""

import sys

from openmed_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
