"""`make demo`: the most complete path end to end on embedded defaults.

Fine-tunes MiniLM with the paper's LoRA recipe on a slice of NCBI-disease with Ray Train on
a local Ray runtime, evaluates the best dev epoch on the test set, and prints the table.
"""

from __future__ import annotations

import os
import sys
import tempfile

from openmed_ray.config import FinetuneConfig


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from openmed_ray.train.finetune import finetune

    output = tempfile.mkdtemp(prefix="openmed-ray-demo-")
    config = FinetuneConfig(
        dataset="NCBI-disease",
        backbone="minilm",
        output=output,
        learning_rate=1e-3,
        epochs=2,
        max_train_sentences=1500,
        threads_per_worker=2,
    )
    ray.init(include_dashboard=False, log_to_driver=False)
    result = finetune(config, name="demo-ncbi-disease")
    test = result.card["metrics"]["test"]
    print(
        f"\nNCBI-disease test ({result.card['method_label']}, 1,500 training sentences, 2 epochs):"
    )
    print(f"  precision {test['precision']:.4f}  recall {test['recall']:.4f}  F1 {test['f1']:.4f}")
    print(f"  bundle: {result.bundle}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
