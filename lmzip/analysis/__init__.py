"""The measurement side, apart from the compressor's own path: the paper's bits per character
(``bpc``), its correlation with benchmark scores (``correlate``, ``report``), and lmzip beside
the classic compressors (``benchmark``). None of it writes or reads ``.lmz`` files' format."""
