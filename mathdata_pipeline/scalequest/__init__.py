"""ScaleQuest: questions from scratch with the user-turn prefix, QFT/QPO, filters, best-of-n responses."""
