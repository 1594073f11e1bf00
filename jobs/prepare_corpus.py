"""`ray job submit -- python jobs/prepare_corpus.py ARGS`: the `openmed-ray corpus` verb as a job."""

import sys

from openmed_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["corpus", *sys.argv[1:]]))
