"""casegate intake: channel adapters that turn provider traffic into normalized messages."""
