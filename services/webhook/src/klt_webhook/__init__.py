"""klt webhook: admits and gates pods, converts and validates Keptn resources."""
