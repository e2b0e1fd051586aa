"""The supervisor: starts, watches, scales and stops every process of one service instance."""
