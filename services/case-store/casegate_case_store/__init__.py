"""casegate case-store: the system of record for customers, cases and their timelines."""
