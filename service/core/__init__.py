"""The pure, synchronous core: bytes in, outgoing records out (classify, dead letters,
the plain record types, shadow comparison, breaker and backoff arithmetic). No I/O."""
