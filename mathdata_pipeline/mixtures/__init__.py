"""Mixture specs, composition, checks, exports and `mathdata trace`."""
