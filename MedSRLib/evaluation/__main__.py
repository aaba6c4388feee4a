"""``python -m MedSRLib.evaluation``: the evaluation protocol on held-out volumes."""
from .protocol import main

main()
