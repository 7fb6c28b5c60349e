"""Models at run time: load and verify artifacts, run them off the event loop (thread or
worker process), swap them while serving."""
