"""Where every method's questions and answers meet: the question pool and the solutions table."""
