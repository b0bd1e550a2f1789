__version__ = "0.1.0"
from . import methods  # registers every method file (tools/export.py keeps this line)
