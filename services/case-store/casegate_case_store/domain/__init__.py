"""Pure case rules: no database, no broker, no network."""
