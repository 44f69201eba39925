"""Fuzz harnesses for both readers (Python and the C reference reader) and their shared input forms."""
