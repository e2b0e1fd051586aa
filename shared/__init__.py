"""What every process of the service shares: settings, wire protocol, schema, logging, process lifecycle."""
