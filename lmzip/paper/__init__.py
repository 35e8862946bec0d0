"""The published tables of Huang et al. (2024), arXiv v2, as package data (see lmzip.analysis.correlate)."""
