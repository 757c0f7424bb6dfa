"""Stage 4: splits and feature sets into Cornac, hyperparameter search, results.

``search.run_search(P)`` runs (or resumes) every cell and writes ``runs/<p>/train/``.
"""
