"""OpenAI's embeddings protocol: its request and answer schemas and its error form."""
