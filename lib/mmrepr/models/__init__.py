"""Recommenders: Cornac's own plus LATTICE, FREEDOM, BM3, LightGCN, Attribute Item-kNN, Random."""
