#!/usr/bin/env python
"""Prepare the lapa dataset from its download folder: python scripts/prepare_lapa.py RAW OUT [--workers N].

See data/README.md for the expected download layout; the logic is in dml_csr/data/prepare/lapa.py.
"""
import sys

from dml_csr.data.prepare.lapa import main

if __name__ == "__main__":
    sys.exit(main())
