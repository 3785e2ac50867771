"""casegate router: decides which team gets a case, at which priority, and explains why."""
