"""Click commands, one module per stage; each parses, calls the library and prints."""
