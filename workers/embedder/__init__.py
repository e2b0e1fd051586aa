"""The embedding worker: one process per model replica, llama-cpp-python with the GGUF mmapped."""
