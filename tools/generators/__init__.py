"""Generators: the format test vectors, random-weight models at real shapes, and the chat reference."""
