"""Small helpers shared by every stage (atomic files, name suggestions)."""
