"""``python -m MedSRLib.evaluation``: the evaluation protocol on held-out volumes (``--all``: the leaderboard)."""
from .leaderboard import main

main()
