"""Configuration: the typed settings of the service and the environment variables that
feed them."""
