"""`ray job submit -- python jobs/select_best.py ARGS`: the `openmed-ray select` verb as a job."""
# Not jobs/select.py: `python jobs/X.py` puts jobs/ first on sys.path, so a job named after
# a standard-library module (select, signal, ...) would shadow it for every import.

import sys

from openmed_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["select", *sys.argv[1:]]))
