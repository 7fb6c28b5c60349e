"""Editor feedback: the feedback consumer, live quality metrics, and the dataset command
that joins corrections with article text."""
