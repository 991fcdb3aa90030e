"""``python -m lpld.pipeline``: the whole pipeline from a config."""
from . import main

main()
