"""The editors' desk: a live feed, a review queue, verdicts and quality, over HTTP."""
