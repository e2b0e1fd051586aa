"""Semantic search in the gateway: the FAISS generations it maps, the tail of fresh rows, the stored texts."""
