"""`ray job submit -- python jobs/annotate_corpus.py ARGS`: the `openmed-ray annotate` verb as a job."""

import sys

from openmed_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["annotate", *sys.argv[1:]]))
