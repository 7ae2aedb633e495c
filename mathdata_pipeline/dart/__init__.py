"""DART-Math: difficulty-aware rejection sampling (DARS) and its difficulty pass."""
