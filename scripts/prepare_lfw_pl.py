#!/usr/bin/env python
"""Prepare the lfw_pl dataset from its download folder: python scripts/prepare_lfw_pl.py RAW OUT [--workers N].

See data/README.md for the expected download layout; the logic is in dml_csr/data/prepare/lfw_pl.py.
"""
import sys

from dml_csr.data.prepare.lfw_pl import main

if __name__ == "__main__":
    sys.exit(main())
