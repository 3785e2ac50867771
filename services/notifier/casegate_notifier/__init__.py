"""casegate notifier: decides who hears about a case change, renders it, delivers it once."""
