"""Federated learning on Flower: partitions, the client and server apps, strategies (FedAvg,
FedProx, Flower's DP wrappers), and run directories like a trained model's.

Flower (``flwr``, the ``federated`` extra) is imported only by the modules that run it
(:mod:`~cnnlab.federated.apps`, :mod:`~cnnlab.federated.server`,
:mod:`~cnnlab.federated.simulate`, :mod:`~cnnlab.federated.deploy`).
"""

from cnnlab.federated.partition import PARTITIONS, PartitionSpec, parse_partition, partition_indices
from cnnlab.federated.settings import DP_MODES, STRATEGIES, FederatedSettings

__all__ = ["DP_MODES", "PARTITIONS", "STRATEGIES", "FederatedSettings", "PartitionSpec",
           "parse_partition", "partition_indices"]
