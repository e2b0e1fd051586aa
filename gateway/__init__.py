"""The HTTP gateway: Starlette endpoints in front of a ZeroMQ broker that fans requests out to workers."""
