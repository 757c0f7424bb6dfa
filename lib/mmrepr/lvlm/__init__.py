"""Stage 3: LVLM embeddings, decoded descriptions and the keyword pipeline."""
