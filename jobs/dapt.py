"""`ray job submit -- python jobs/dapt.py ARGS`: the `openmed-ray dapt` verb as a job."""

import sys

from openmed_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["dapt", *sys.argv[1:]]))
