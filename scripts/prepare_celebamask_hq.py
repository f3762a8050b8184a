#!/usr/bin/env python
"""Prepare the celebamask_hq dataset from its download folder: python scripts/prepare_celebamask_hq.py RAW OUT [--workers N].

See data/README.md for the expected download layout; the logic is in dml_csr/data/prepare/celebamask_hq.py.
"""
import sys

from dml_csr.data.prepare.celebamask_hq import main

if __name__ == "__main__":
    sys.exit(main())
