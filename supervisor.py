#!/usr/bin/env python3
"""Llama Embeddings Service: `python supervisor.py start|stop|status|scale|models ...` (see --help)."""

import sys

from supervision.cli import main

if __name__ == "__main__":
    sys.exit(main())
