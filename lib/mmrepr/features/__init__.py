"""Stage 2: feature extraction (ResNet50, ViT, Sentence-BERT, CLIP) and noise controls."""
