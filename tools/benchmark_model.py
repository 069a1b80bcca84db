#!/usr/bin/env python
"""Model-level benchmark (DiNAT vs NAT vs Swin); same as `python -m dinat_m2f.benchmarks.model`."""

import sys

from dinat_m2f.benchmarks.model import main

if __name__ == "__main__":
    main(sys.argv[1:])
