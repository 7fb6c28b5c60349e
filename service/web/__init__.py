"""What every HTTP port shares: the uvicorn server, bearer tokens and their middleware."""
