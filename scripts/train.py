#!/usr/bin/env python
"""Train or fine-tune GenVIS on a YouTube-VIS-format data set with Accelerate: the same as `genvis-hf train`.

    python scripts/train.py --config tiny --images DIR --annotations ANN.json --output-dir OUT
    accelerate launch --multi_gpu scripts/train.py --config DIR_OF_PRETRAINED --images ... --output-dir OUT

See docs/training.md for every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from genvis_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
