"""psjob operator: the PSJob API, its CRD, rendering of pods and services, and the kopf operator."""

__version__ = "0.1.0"
