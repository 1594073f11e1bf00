"""`ray job submit -- python jobs/train_relations.py ARGS`: `openmed-ray train-relations` as a job."""

import sys

from openmed_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-relations", *sys.argv[1:]]))
