"""The node provider of the simulated cluster (tests/sim_cluster.py): Ray's ``FakeMultiNodeProvider`` (worker
"nodes" are extra raylets on this machine), with one change.

With node updaters off (no SSH), the v1 autoscaler expects the provider to report a launched node as up to date;
``FakeMultiNodeProvider`` keeps the ``uninitialized`` status tag the autoscaler passes at creation, so a node that
dies is never "ours to terminate" (``StandardAutoscaler.terminate_unhealthy_nodes`` skips it) and is never
replaced. Here a node is up to date once its raylet is started, as a cloud instance running Ray from its image is.
Loaded by the head's autoscaler through the ``external`` provider type (``provider.module``).
"""

from __future__ import annotations

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import STATUS_UP_TO_DATE, TAG_RAY_NODE_STATUS


class SimNodeProvider(FakeMultiNodeProvider):
    def create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        return super().create_node_with_resources_and_labels(
            node_config, {**tags, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE}, count, resources, labels)
