"""Container images for the kubelet node, built without Docker or a registry.

``ensure_node_images()`` builds (or reuses, by the hash of their inputs) the Debian-bootstrapped
Python base, the pause and CoreDNS images and the project's operator and runtime images, each
exported to a docker-archive under ``<cache>/images/archives``; ``import_images()`` loads them into
a containerd. ``python -m psjob_localcluster.images`` (``make node-images``) runs the former.
See docs/cluster.md, "Images for the kubelet node".
"""

from psjob_localcluster.images.archives import BuiltImage
from psjob_localcluster.images.containerd import Ctr, CtrRunner, import_images
from psjob_localcluster.images.node_images import NodeImages, ensure_node_images
from psjob_localcluster.images.prerequisites import missing_prerequisites

__all__ = [
    "BuiltImage",
    "Ctr",
    "CtrRunner",
    "NodeImages",
    "ensure_node_images",
    "import_images",
    "missing_prerequisites",
]
