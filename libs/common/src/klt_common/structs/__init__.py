"""Pure data: API models for the Keptn resources and the bus event catalogue. No I/O here."""
