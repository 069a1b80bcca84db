#!/usr/bin/env python
"""Neighborhood-attention benchmark table; same as `python -m dinat_m2f.benchmarks.na`."""

from dinat_m2f.benchmarks.na import main

if __name__ == "__main__":
    main()
