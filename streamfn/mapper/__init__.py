"""Event source mapping: turns records from a connector into filtered, batched invocations."""
