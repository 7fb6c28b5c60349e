"""Bearer tokens read from a file, and the ASGI middleware that asks for one."""
