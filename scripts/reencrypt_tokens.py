#!/usr/bin/env python
"""The seed's `python scripts/reencrypt_tokens.py [--dry-run]`, kept working: the same command
as `flask --app authgateway tokens reencrypt [--dry-run] [--batch-size N]`."""

import sys

from authgateway.commandline import main

if __name__ == "__main__":
    main(["tokens", "reencrypt", *sys.argv[1:]], prog_name="reencrypt_tokens.py")
