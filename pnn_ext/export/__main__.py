"""python -m pnn_ext.export: the pnn-export command."""
import sys

from .cli import main

sys.exit(main())
