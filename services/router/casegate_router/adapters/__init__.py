"""The router's connections to the outside that are not the bus: case-store's database
(read-only, for replays)."""
