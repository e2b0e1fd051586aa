"""Model storage: locating, converting and cataloguing embedding models."""
