"""mmrepr: do recommender systems really leverage multimodal content?

A reproducible study of Pomo et al., CIKM 2025 (arXiv 2508.04571). The notebooks in
``notebooks/`` tell the story; this package holds the code they call.
"""

__version__ = "0.1.0"
