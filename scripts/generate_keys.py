#!/usr/bin/env python
"""The seed's `python scripts/generate_keys.py [--rotate]`, kept working: the same command
as `flask --app authgateway keys generate [--rotate]`."""

import sys

from authgateway.commandline import main

if __name__ == "__main__":
    main(["keys", "generate", *sys.argv[1:]], prog_name="generate_keys.py")
