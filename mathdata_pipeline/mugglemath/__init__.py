"""MuggleMath: query augmentation by five rewrites, and sampled responses with a majority vote."""
