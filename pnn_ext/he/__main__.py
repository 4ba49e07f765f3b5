"""python -m pnn_ext.he: the pnn-he command."""
import sys

from .cli import main

sys.exit(main())
