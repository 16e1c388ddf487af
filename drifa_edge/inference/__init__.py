"""MC-dropout inference: engine, uncertainty, prediction over files."""
