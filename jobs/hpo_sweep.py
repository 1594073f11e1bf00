"""`ray job submit -- python jobs/hpo_sweep.py ARGS`: the `openmed-ray tune` verb as a job."""

import sys

from openmed_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
