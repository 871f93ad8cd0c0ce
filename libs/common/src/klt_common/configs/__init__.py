"""Settings: explicit objects built once in each entry point and passed down."""
