"""Configuration: the file, the environment and flags parsed once; virtual keys."""
