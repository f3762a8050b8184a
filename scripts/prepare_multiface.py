#!/usr/bin/env python
"""Prepare a Multi-Face-style root (Liu et al. 2017: several faces an image; background, skin, hair), rescaled by the
long side to 512 and zero-padded to 512x512: python scripts/prepare_multiface.py RAW OUT [--workers N].

See data/README.md for the expected layout; the logic is in dml_csr/data/prepare/multiface.py.
"""
import sys

from dml_csr.data.prepare.multiface import main

if __name__ == "__main__":
    sys.exit(main())
