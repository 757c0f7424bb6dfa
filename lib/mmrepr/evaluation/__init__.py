"""Full-ranking evaluation (batched, exact, per-user values kept)."""
