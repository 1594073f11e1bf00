"""`ray job submit -- python jobs/kg_extract.py ARGS`: the `openmed-ray kg` verb as a job."""

import sys

from openmed_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["kg", *sys.argv[1:]]))
