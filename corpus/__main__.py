"""`python -m corpus --out-dir D`: write the built-in corpus (see corpus/__init__.py)."""
from corpus import main

main()
