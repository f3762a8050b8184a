#!/usr/bin/env python
"""Prepare the helen dataset from its download folder: python scripts/prepare_helen.py RAW OUT [--workers N].

See data/README.md for the expected download layout; the logic is in dml_csr/data/prepare/helen.py.
"""
import sys

from dml_csr.data.prepare.helen import main

if __name__ == "__main__":
    sys.exit(main())
