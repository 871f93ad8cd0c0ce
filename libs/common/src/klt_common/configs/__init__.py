"""Settings: explicit objects built once in each entry point and passed down."""

from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ServiceSettings,
    ShutdownSettings,
)

__all__ = [
    "BusSettings",
    "ClusterSettings",
    "ObservabilitySettings",
    "ServiceSettings",
    "ShutdownSettings",
]
