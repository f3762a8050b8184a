#!/usr/bin/env python
"""Prepare your own photos and label maps, with your own class names, for data.dataset: custom:

    python scripts/prepare_custom.py --images DIR --masks DIR --out ROOT --classes NAMES.txt [--colors COLORS.txt]
        [--val FRACTION --test FRACTION | --splits DIR_WITH_LISTS] [--seed N] [--workers N]

See README.md ("Your own data"); the logic is in dml_csr/data/prepare/custom.py.
"""
import sys

from dml_csr.data.prepare.custom import main

if __name__ == "__main__":
    sys.exit(main())
