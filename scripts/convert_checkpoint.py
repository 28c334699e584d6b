#!/usr/bin/env python
"""Convert an original GenVIS checkpoint: same options as `genvis-hf convert`.

python scripts/convert_checkpoint.py --checkpoint model_final.pth --preset genvis-r50-ytvis19 --output genvis-r50-ytvis19
python scripts/convert_checkpoint.py --checkpoint model_final.pth --config config.yaml --output OUT
"""

import argparse
import sys

from genvis_hf.conversion.commands import add_convert_arguments, run_convert

if __name__ == "__main__":
    sys.exit(run_convert(add_convert_arguments(argparse.ArgumentParser()).parse_args()))
