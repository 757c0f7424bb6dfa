"""Stage 1: data preparation (Amazon Reviews 2023, Allrecipes, the synthetic catalogue)."""
