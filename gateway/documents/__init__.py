"""Documents: an uploaded text or PDF file → the embedding of every sentence, packaged as a zip of JSON."""
