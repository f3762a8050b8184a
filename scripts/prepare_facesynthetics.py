#!/usr/bin/env python
"""Prepare FaceSynthetics from its unpacked download: python scripts/prepare_facesynthetics.py RAW OUT [--val N]
[--test N] [--workers N].

See data/README.md for where to get it; the logic is in dml_csr/data/prepare/facesynthetics.py.
"""
import sys

from dml_csr.data.prepare.facesynthetics import main

if __name__ == "__main__":
    sys.exit(main())
