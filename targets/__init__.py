"""Target descriptions (one TOML per board), installed as ``edgedistill.target_files``."""
